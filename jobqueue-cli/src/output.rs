//! How the CLI prints: tables for people, JSON (`--json`) for scripts.

use jobqueue::QueueLimits;
use serde_json::Value;

use crate::limit::limits_row;

/// Prints values as tables or JSON.
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// One object: `key  value` lines, or JSON.
    pub(crate) fn record(&self, value: &Value) {
        if self.json {
            println!("{value}");
            return;
        }
        if let Value::Object(map) = value {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                println!("{k:width$}  {}", cell(v));
            }
        } else {
            println!("{}", cell(value));
        }
    }

    /// A queue's limits: a table with a row for the queue, the per-key
    /// defaults and each key with limits of its own, or the JSON object
    /// `{"queue", "per_key", "keys"}` (rates as `count` and `period_ms`).
    pub(crate) fn limits(&self, limits: &QueueLimits) {
        if self.json {
            println!(
                "{}",
                serde_json::to_value(limits).expect("limits serialize")
            );
            return;
        }
        let mut rows = vec![
            limits_row("queue", &limits.queue),
            limits_row("per key (default)", &limits.per_key),
        ];
        for (key, own) in &limits.keys {
            rows.push(limits_row(&format!("key {key}"), own));
        }
        self.table(&rows, &["limits", "rate", "burst", "max_running"]);
    }

    /// Rows of objects: a table with `columns`, or a JSON array.
    pub(crate) fn table(&self, rows: &[Value], columns: &[&str]) {
        if self.json {
            println!("{}", Value::Array(rows.to_vec()));
            return;
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|c| r.get(*c).map(cell).unwrap_or_default())
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count().min(60))
                    .max()
                    .unwrap_or(0)
                    .max(c.len())
            })
            .collect();
        let line = |values: Vec<String>| {
            values
                .iter()
                .zip(&widths)
                .map(|(v, w)| format!("{:w$}", truncate(v, 60)))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!(
            "{}",
            line(columns.iter().map(|c| c.to_uppercase()).collect())
        );
        for row in cells {
            println!("{}", line(row));
        }
        if rows.is_empty() {
            println!("(none)");
        }
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}
