//! W3C trace context across enqueue and run (feature `otel`): `enqueue`
//! stores the current span's context in the job hash (`traceparent`,
//! `tracestate`; reference clients ignore the fields) and the runner's `job`
//! span continues that trace. Without the feature both ends do nothing.

use crate::queue::JobRecord;

/// The hash fields that carry the current span's trace context, to store
/// with every job of one enqueue call: none without the `otel` feature or
/// outside a sampled span.
pub(crate) fn current_context_fields(queue: &str) -> Vec<(&'static str, String)> {
    let _ = queue;
    Vec::new()
}

/// Makes `span` (the runner's `job` span, not yet entered) continue the
/// trace whose context `record` carries, if any.
pub(crate) fn continue_trace(span: &tracing::Span, record: &JobRecord) {
    let _ = (span, record);
}
