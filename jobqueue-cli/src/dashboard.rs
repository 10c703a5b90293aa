//! `jobqueue dashboard`: serves the web dashboard from the command line,
//! on loopback unless a token and a host are given.

use std::net::SocketAddr;

use jobqueue::dashboard::DashboardOptions;
use jobqueue::queue::Queue;
use jobqueue::{CancellationToken, Client};

use crate::Failure;

/// Serves the dashboard of `queue` (and every queue found) on `host:port`
/// until Ctrl-C.
pub(crate) async fn dashboard(
    client: &Client,
    queue: &Queue,
    host: &str,
    port: u16,
    token: Option<String>,
) -> Result<(), Failure> {
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|e| Failure(2, format!("bad address {host}:{port}: {e}")))?;
    let mut options = DashboardOptions::new().queues([queue.name()]);
    if let Some(token) = token {
        options = options.token(token);
    }
    options
        .check_bind(addr)
        .map_err(|e| Failure(2, e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure(1, format!("could not listen on {addr}: {e}")))?;
    println!("jobqueue dashboard on http://{addr}/");
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        }
    });
    let app = jobqueue::dashboard::router_with(client.clone(), options);
    jobqueue::dashboard::serve(listener, app, shutdown)
        .await
        .map_err(|e| Failure(1, e.to_string()))
}
