//! Finding the queues that have keys in Redis, for the page and for the
//! metrics endpoint: a bounded `SCAN`, reused for a while so that neither a
//! busy page nor a frequent scraper walks the keyspace each time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::error::Result;

/// How long a scan of Redis for queue names is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(10);

/// `SCAN` steps (of `COUNT 1000`) per node when discovering queues: bounds
/// the work on a Redis holding millions of keys.
const DISCOVERY_STEPS: usize = 50;

/// The queue names the last scan found, and when.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    found: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Discovery {
    /// Queue names with keys in Redis (shards by their own names), as
    /// [`Client::queue_names`] finds them within [`DISCOVERY_STEPS`].
    pub(super) async fn names(&self, client: &Client) -> Result<Vec<String>> {
        if let Some((at, names)) = self.found.lock().expect("discovery lock").as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(names.clone());
        }
        let names = client.queue_names_within(DISCOVERY_STEPS).await?;
        *self.found.lock().expect("discovery lock") = Some((Instant::now(), names.clone()));
        Ok(names)
    }
}
