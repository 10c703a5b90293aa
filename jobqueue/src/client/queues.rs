//! Finding the queues that have keys in Redis, for tools (`jobqueue
//! queues`) and the dashboard.

use std::collections::BTreeSet;

use super::Client;
use crate::error::Result;
use crate::keys::{Keys, validate_name};

impl Client {
    /// The names of the queues with at least one key in Redis, sorted.
    ///
    /// Found by walking the keyspace with `SCAN` (`MATCH queue:*`, `COUNT
    /// 1000`, never `KEYS`, which would hold Redis for the whole walk), on
    /// every primary of a cluster. Both layouts are read (`queue:NAME:…` and
    /// `queue:{NAME}:…`); a key whose name no queue could have is skipped.
    /// The shards of a sharded queue are listed by their own names
    /// (`email`, `email~1`, …).
    ///
    /// The walk visits every key of every node, so it is for tools and
    /// dashboards, not a hot path. A queue whose keys all stay for the whole
    /// walk is found; one created or deleted meanwhile may or may not be.
    ///
    /// # Cancellation safety
    /// Safe: read only.
    pub async fn queue_names(&self) -> Result<Vec<String>> {
        self.queue_names_within(usize::MAX).await
    }

    /// [`queue_names`](Self::queue_names) in at most `max_steps` `SCAN`
    /// steps per node: bounded work, which misses the queues whose keys lie
    /// beyond `max_steps` × 1,000 keys of a node.
    pub(crate) async fn queue_names_within(&self, max_steps: usize) -> Result<Vec<String>> {
        let mut scan = self
            .connection()
            .keys(Keys::EVERY_QUEUE_PATTERN, None, max_steps)
            .await?;
        let mut names = BTreeSet::new();
        while let Some(keys) = scan.next_batch().await? {
            for name in keys.iter().filter_map(|key| Keys::queue_name_of(key)) {
                if !names.contains(name) && validate_name(name).is_ok() {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}
