// The payload is decoded and owned by the run: a borrowed payload is an
// error on the argument, and the uses of the job add nothing.
use jobqueue::{Client, job};

#[job]
async fn greet(name: &str) -> String {
    format!("hello {name}")
}

async fn uses(client: Client) -> jobqueue::Result<()> {
    let _ = client.enqueue::<greet>(()).await?;
    Ok(())
}

fn main() {
    let _ = uses;
}
