//! In-process metrics (feature `metrics`).
