//! Walking the keyspace with `SCAN`, on one server or on every primary of a
//! cluster.

use redis::FromRedisValue;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::{Backend, Connection};
use crate::error::Result;

impl Connection {
    /// A walk over the keys matching `pattern` with `SCAN` (`COUNT 1000` per
    /// step, at most `max_steps` steps per node). On a cluster, keys sharing
    /// `slot_of`'s hash tag are scanned on the primary serving that slot, and
    /// without `slot_of` on every primary; each primary is addressed through
    /// a slot it serves, the way the client's own slot map knows it.
    pub(crate) async fn keys(
        &self,
        pattern: &str,
        slot_of: Option<&str>,
        max_steps: usize,
    ) -> Result<KeyScan<'_>> {
        let by_slot = |route: Route| {
            Some(RoutingInfo::SingleNode(
                SingleNodeRoutingInfo::SpecificNode(route),
            ))
        };
        let mut targets = match (&self.inner.backend, slot_of) {
            (Backend::Single { .. }, _) => vec![None],
            #[cfg(feature = "testing")]
            (Backend::Detached, _) => vec![None],
            (Backend::Cluster { .. }, Some(key)) => {
                vec![by_slot(Route::with_key(key, SlotAddr::Master))]
            }
            (Backend::Cluster { .. }, None) => self
                .primaries()
                .await?
                .into_iter()
                .map(|p| by_slot(Route::new(p.slot, SlotAddr::Master)))
                .collect(),
        };
        targets.reverse();
        Ok(KeyScan {
            conn: self,
            pattern: pattern.to_owned(),
            targets,
            cursor: 0,
            steps: 0,
            max_steps,
        })
    }
}

/// A `SCAN` walk over one node after another; see [`Connection::keys`].
pub(crate) struct KeyScan<'a> {
    conn: &'a Connection,
    pattern: String,
    /// Nodes still to walk, the current one last (`None`: the only server).
    targets: Vec<Option<RoutingInfo>>,
    cursor: u64,
    steps: usize,
    max_steps: usize,
}

impl KeyScan<'_> {
    /// The next step's keys (possibly none), or `None` once every node is
    /// walked.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<String>>> {
        let Some(target) = self.targets.last() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<String>) = match target {
            None => self.conn.query(&cmd).await?,
            Some(route) => {
                let value = self.conn.route(&cmd, route).await?;
                FromRedisValue::from_redis_value(value).map_err(redis::RedisError::from)?
            }
        };
        self.steps += 1;
        if next == 0 || self.steps >= self.max_steps {
            self.targets.pop();
            self.cursor = 0;
            self.steps = 0;
        } else {
            self.cursor = next;
        }
        Ok(Some(keys))
    }
}
