//! W3C trace context across enqueue and run (feature `otel`): `enqueue`
//! stores the current span's context in the job hash (`traceparent`,
//! `tracestate`; reference clients ignore the fields) and the runner's `job`
//! span continues that trace. Without the feature both ends do nothing.
//!
//! Enqueue opens a short `send {queue}` span (kind producer) under the
//! current span and injects *its* context; each run's `job` span (kind
//! consumer, operation `process`) takes that context as its parent, so a
//! retried or reclaimed job's attempts are sibling spans under the same
//! `send`. The
//! context goes through the global text map propagator, which is a noop
//! until the application installs one (`TraceContextPropagator`).

use crate::queue::JobRecord;

/// The job-hash fields that carry the trace context, as the W3C Trace
/// Context headers are named.
#[cfg(feature = "otel")]
const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// The hash fields that carry the enqueuing code's trace context, to store
/// with every job of one enqueue call: the context of a `send {queue}` span
/// opened under the current span. None without the `otel` feature, outside
/// a span with a valid OpenTelemetry context, or while the global
/// propagator is the default noop.
pub(crate) fn current_context_fields(queue: &str) -> Vec<(&'static str, String)> {
    #[cfg(feature = "otel")]
    {
        use opentelemetry::Context;
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        // Outside any trace (neither a tracing span the layer sees nor an
        // OpenTelemetry context attached by other code), a job starts its
        // own trace when it runs: no send span, nothing stored.
        let in_trace = |cx: Context| cx.span().span_context().is_valid();
        if !in_trace(tracing::Span::current().context()) && !in_trace(Context::current()) {
            return Vec::new();
        }
        let send = tracing::info_span!(
            "send",
            otel.name = format!("send {queue}"),
            otel.kind = "producer",
            messaging.system = "jobqueue",
            messaging.operation.name = "send",
            messaging.operation.type = "send",
            messaging.destination.name = queue,
        );
        let cx = send.context();
        if !cx.span().span_context().is_valid() {
            return Vec::new();
        }
        let mut carrier = std::collections::HashMap::new();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
        FIELDS
            .into_iter()
            .filter_map(|field| {
                carrier
                    .remove(field)
                    .filter(|value| !value.is_empty())
                    .map(|value| (field, value))
            })
            .collect()
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = queue;
        Vec::new()
    }
}

/// Makes `span` (the runner's `job` span, not yet entered) a consumer
/// `process` span continuing the trace whose context `record` carries, if
/// any: each attempt of a job is a new span under the same `send` span. A
/// span the OpenTelemetry layer does not see, or one already started, keeps
/// its own parent (logged at debug).
pub(crate) fn continue_trace(span: &tracing::Span, queue: &str, record: &JobRecord) {
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        if span.is_disabled() {
            return;
        }
        span.record("otel.name", format!("process {queue}"));
        span.record("otel.kind", "consumer");
        span.record("messaging.destination.name", queue);
        span.record("messaging.system", "jobqueue");
        span.record("messaging.operation.name", "process");
        span.record("messaging.message.id", record.id());
        span.set_attribute("messaging.operation.type", "process");
        if record.field(FIELDS[0]).is_none() {
            return;
        }
        let carrier: std::collections::HashMap<String, String> = FIELDS
            .into_iter()
            .filter_map(|field| Some((field.to_owned(), record.field(field)?.to_owned())))
            .collect();
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        if !cx.span().span_context().is_valid() {
            tracing::debug!(
                job = record.id(),
                "no valid trace context in the job's fields (is a propagator installed?); its run starts a trace"
            );
            return;
        }
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(job = record.id(), error = %e, "the job span cannot continue the enqueuing trace");
        }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = (span, queue, record);
    }
}
