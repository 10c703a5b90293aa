//! [`JobSummary`]: one job as the dashboard and the reference demo's
//! `/jobs` show it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::queue::JobRecord;

/// One job as the reference demo's `/jobs` shows it, read leniently from an
/// untrusted hash: a missing or malformed field shows as a neutral value,
/// never an error, so one bad job cannot break a page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct JobSummary {
    /// The job's id.
    pub id: String,
    /// The `status` field, `"unknown"` when missing or empty.
    pub status: String,
    /// Claims so far; 0 when not a number.
    pub attempts: u32,
    /// The payload, parsed; `{}` when missing or not JSON.
    pub payload: Value,
    /// The stored result, parsed (or the raw text when it is not JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The last error, when not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The progress the job last reported, parsed (or the raw text when it
    /// is not JSON); absent when it reported none. Its time is the raw
    /// field `progress_at_ms`, which the dashboard adds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    /// More raw fields shown beside these (the dashboard's lists add the
    /// handler name and the timestamps).
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

impl JobSummary {
    /// The summary of job `id`, whose hash is `record` (`None` when it is
    /// gone).
    pub fn new(id: &str, record: Option<&JobRecord>) -> Self {
        let mut summary = Self {
            id: id.to_owned(),
            status: "unknown".to_owned(),
            attempts: 0,
            payload: Value::Object(serde_json::Map::new()),
            result: None,
            last_error: None,
            progress: None,
            fields: BTreeMap::new(),
        };
        let Some(record) = record else {
            return summary;
        };
        if let Some(status) = record.field("status").filter(|s| !s.is_empty()) {
            status.clone_into(&mut summary.status);
        }
        summary.attempts = record.attempts().unwrap_or(0);
        if let Ok(payload) = record.payload::<Value>() {
            summary.payload = payload;
        }
        summary.result = record.field("result").map(|text| {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        });
        summary.last_error = record.last_error().map(str::to_owned);
        summary.progress = record
            .field("progress")
            .filter(|text| !text.is_empty())
            .map(|text| {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
            });
        summary
    }

    /// Adds the raw `fields` of `record` that it has.
    pub fn with_fields(mut self, record: Option<&JobRecord>, fields: &[&str]) -> Self {
        for field in fields {
            if let Some(value) = record.and_then(|r| r.field(field)) {
                self.fields.insert((*field).to_owned(), value.to_owned());
            }
        }
        self
    }
}
