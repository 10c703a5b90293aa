//! The [`Registry`] of jobs, built once at startup from what `#[job]`
//! registered through `inventory`.

use std::collections::{BTreeMap, BTreeSet};

use crate::definition::JobDefinition;
use crate::error::{Error, Result};
use crate::queue::JobRecord;

/// Every job linked into the program, by name.
///
/// Registration is static: each `#[job]` submits a [`JobDefinition`] that the
/// linker collects. A crate of jobs must be linked to register: if nothing
/// else names it, add `use my_jobs as _;`.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    jobs: BTreeMap<&'static str, JobDefinition>,
}

impl Registry {
    /// Collects every `#[job]` in the program. Two jobs with the same name
    /// are an error naming both module paths: the name is what Redis stores,
    /// so it must say which code runs.
    pub fn from_inventory() -> Result<Self> {
        Self::from_definitions(inventory::iter::<JobDefinition>.into_iter().copied())
    }

    /// A registry of the given definitions (with the same duplicate check).
    pub fn from_definitions(definitions: impl IntoIterator<Item = JobDefinition>) -> Result<Self> {
        let mut jobs = BTreeMap::new();
        for def in definitions {
            if let Some(first) = jobs.insert(def.name(), def) {
                // Name both in a stable order whatever the link order was.
                let (a, b) = if first.module_path() <= def.module_path() {
                    (first.module_path(), def.module_path())
                } else {
                    (def.module_path(), first.module_path())
                };
                return Err(Error::DuplicateJob {
                    name: def.name().to_owned(),
                    first: a.to_owned(),
                    second: b.to_owned(),
                });
            }
        }
        Ok(Self { jobs })
    }

    /// Every job, by name.
    pub fn jobs(&self) -> impl Iterator<Item = &JobDefinition> {
        self.jobs.values()
    }

    /// The job registered under `name`.
    pub fn get(&self, name: &str) -> Option<&JobDefinition> {
        self.jobs.get(name)
    }

    /// Every queue that has a job.
    pub fn queues(&self) -> BTreeSet<&'static str> {
        self.jobs.values().map(JobDefinition::queue).collect()
    }

    /// The handler for a job read from `queue`:
    ///
    /// 1. a job with a `job` field (every job `jobqueue` enqueues) runs the
    ///    job registered under that name;
    /// 2. a job without one (written by a reference client) whose payload is
    ///    an object with a string `kind` runs the job of that name, if it is
    ///    registered on this queue;
    /// 3. otherwise, if exactly one job is registered on this queue, that one.
    ///
    /// Anything else is an error naming what was tried; the runner fails the
    /// job with it (never retried: no retry can add a handler).
    pub fn route(&self, queue: &str, record: &JobRecord) -> Result<&JobDefinition> {
        if let Some(name) = record.name() {
            return self.get(name).ok_or_else(|| Error::UnknownJob {
                name: name.to_owned(),
                queue: queue.to_owned(),
            });
        }
        let kind = record
            .payload::<serde_json::Value>()
            .ok()
            .and_then(|p| p.get("kind").and_then(|k| k.as_str()).map(str::to_owned));
        if let Some(def) = kind
            .as_deref()
            .and_then(|k| self.get(k))
            .filter(|d| d.queue() == queue)
        {
            return Ok(def);
        }
        let on_queue: Vec<&JobDefinition> =
            self.jobs.values().filter(|d| d.queue() == queue).collect();
        if let [only] = on_queue[..] {
            return Ok(only);
        }
        let kind = match kind {
            Some(kind) => format!("its payload kind {kind:?} names no job on this queue"),
            None => "its payload has no string `kind`".to_owned(),
        };
        Err(Error::Unroutable {
            id: record.id().to_owned(),
            queue: queue.to_owned(),
            reason: format!(
                "it has no `job` field, {kind}, and the queue has {} jobs, not exactly one",
                on_queue.len()
            ),
        })
    }
}
