//! Run with: `cargo run -p jobqueue-examples --example service` (Redis on
//! 127.0.0.1:6379, or set `REDIS_URL`; `PORT` moves the web server off
//! 8793). Stop it with Ctrl-C or SIGTERM.
//!
//! A service's `main`: two `#[job]`s, application code that enqueues them
//! (one delayed), a `Runner` that works them off until a signal cancels its
//! token, then drains, and the dashboard mounted in the service's own axum
//! app on http://127.0.0.1:8793/jobs/.
//!
//! And both kinds of metrics, for Prometheus to scrape:
//! - http://127.0.0.1:8793/metrics: the fleet-wide figures of every queue,
//!   read from Redis at each scrape (`jobqueue::dashboard::metrics_router`):
//!   depths, totals, the oldest pending job's age. The same whichever
//!   process serves it.
//! - http://127.0.0.1:8793/metrics/process: this process's own figures
//!   (jobqueue's feature `metrics`, exported by metrics-exporter-prometheus):
//!   jobs started, completed, failed by this runner, their run and wait
//!   times, plus the application's own metrics.

use std::io::IsTerminal;
use std::time::Duration;

use axum::http::header;
use jobqueue::client::EnqueueOptions;
use jobqueue::{CancellationToken, Client, JobContext, JobError, Runner, job};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct Welcome {
    to: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    message_id: String,
}

/// Sends a welcome mail; addresses without an `@` can never be sent.
#[job(queue = "email", max_attempts = 3, visibility = "30s")]
async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<Receipt, JobError> {
    if !args.to.contains('@') {
        return Err(JobError::permanent(format!(
            "{:?} is not an address",
            args.to
        )));
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // the SMTP round trip
    // The application's own metrics land on the same page as the runner's.
    metrics::counter!("service_welcome_mails_sent_total").increment(1);
    Ok(Receipt {
        message_id: format!("{}-{}", ctx.id(), ctx.attempt()),
    })
}

/// Builds the daily report; stops early if the runner shuts down.
#[job(queue = "reports", timeout = "1m", backoff = "exponential(5s, 5m)")]
async fn daily_report(day: String, ctx: JobContext) -> Result<String, String> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(300)) => Ok(format!("report for {day}")),
        () = ctx.cancelled() => Err("interrupted".into()),
    }
}

#[tokio::main]
async fn main() -> jobqueue::Result<()> {
    tracing_subscriber::fmt()
        // Colour only on a terminal: logs sent to a file or a pipe stay
        // plain text. NO_COLOR turns it off too.
        .with_ansi(
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,jobqueue=debug")),
        )
        .init();
    // The recorder first: the Runner takes its metric handles when it is
    // built, and a handle taken before any recorder exists reports nowhere.
    // Buckets for jobqueue's histograms: summaries (the exporter's default)
    // cannot be added up across a fleet's workers.
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Prefix("jobqueue_".into()),
            jobqueue::metrics::BUCKETS,
        )
        .expect("buckets are not empty")
        .install_recorder()
        .expect("no other metrics recorder is installed");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().expect("PORT is a port number"),
        Err(_) => 8793,
    };
    let client = Client::connect(&url).await?;

    // Application code: typed enqueue.
    for to in ["ada@example.com", "grace@example.com", "not-an-address"] {
        client
            .enqueue::<send_welcome>(Welcome { to: to.into() })
            .await?;
    }
    let report = client
        .enqueue_with::<daily_report>(
            "2026-11-27".into(),
            EnqueueOptions::new().delay(Duration::from_secs(2)),
        )
        .await?;

    // The worker side: a Runner for every registered queue.
    let runner = Runner::builder(client.clone())
        .concurrency(20)
        .shutdown_timeout(Duration::from_secs(10))
        .build()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tokio::spawn(async move {
        match report.wait(Duration::from_secs(60)).await {
            Ok(text) => tracing::info!(text, "report ready"),
            Err(e) => tracing::warn!(error = %e, "no report"),
        }
    });
    tokio::spawn(upkeep(prometheus.clone(), shutdown.clone()));
    // The dashboard and both metrics pages, in the service's own router.
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "my service; jobs at /jobs/" }),
        )
        .route(
            "/metrics/process",
            axum::routing::get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    prometheus.render(),
                )
            }),
        )
        .merge(jobqueue::dashboard::metrics_router(client.clone()))
        // nest_service serves both /jobs and /jobs/ (nest: /jobs only).
        .nest_service("/jobs", jobqueue::dashboard::router(client));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("port {port} is free: {e}"));
    println!("dashboard on http://127.0.0.1:{port}/jobs/");
    println!(
        "metrics on http://127.0.0.1:{port}/metrics (fleet-wide, from Redis) \
         and http://127.0.0.1:{port}/metrics/process (this process)"
    );
    let web = tokio::spawn(jobqueue::dashboard::serve(listener, app, shutdown.clone()));
    runner.run(shutdown).await;
    let _ = web.await;
    Ok(())
}

/// The exporter's upkeep, which `install_recorder` leaves to the caller
/// (only the exporter's own HTTP listener runs it): without it the samples
/// histograms record pile up between scrapes.
async fn upkeep(prometheus: PrometheusHandle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    while shutdown.run_until_cancelled(every.tick()).await.is_some() {
        prometheus.run_upkeep();
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("signal received: shutting down");
    shutdown.cancel();
}
