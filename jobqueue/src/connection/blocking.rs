//! The pool of dedicated connections for blocking claims.
//!
//! A blocking command (`BLMOVE`, `BRPOPLPUSH`) on the shared multiplexed
//! connection would stall every command queued behind it (reference
//! section 9, see [`docs::reference_bugs`](crate::docs::reference_bugs)), and a
//! response timeout would cut it off. Blocking claims therefore borrow a
//! connection of their own, with no response timeout of the client's; the
//! claim bounds the wait itself.

use std::sync::Arc;

use redis::AsyncConnectionConfig;

use super::{Backend, Conn, Connection, Inner};
use crate::error::Result;

impl Connection {
    /// Borrows a dedicated connection for a blocking command.
    pub(crate) async fn blocking(&self) -> Result<BlockingConnection> {
        let pooled = self.inner.blocking.lock().expect("pool lock").pop();
        let conn = match (pooled, &self.inner.backend) {
            (Some(conn), _) => conn,
            (None, Backend::Single { client, .. }) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.inner.options.connect_timeout))
                    .set_response_timeout(None);
                Conn::Dedicated(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            (
                None,
                Backend::Cluster {
                    blocking_client, ..
                },
            ) => Conn::Cluster(blocking_client.get_async_connection().await?),
            #[cfg(feature = "testing")]
            (None, Backend::Detached) => Conn::Detached,
        };
        Ok(BlockingConnection {
            conn,
            home: Arc::clone(&self.inner),
        })
    }
}

/// A connection borrowed for one blocking command. It goes back to the pool
/// only through [`BlockingConnection::give_back`], after a command completed
/// cleanly; dropped anywhere else (an error, a cancelled future), it is closed,
/// so no reply of an abandoned command can ever reach another caller.
pub(crate) struct BlockingConnection {
    pub(crate) conn: Conn,
    home: Arc<Inner>,
}

impl BlockingConnection {
    pub(crate) fn give_back(self) {
        self.home
            .blocking
            .lock()
            .expect("pool lock")
            .push(self.conn);
    }
}
