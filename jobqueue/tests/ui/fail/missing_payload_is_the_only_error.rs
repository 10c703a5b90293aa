// A job written without a payload argument gets `()` as its payload beside
// the error, the payload it would take, so enqueueing `()` adds nothing.
use jobqueue::{Client, job};

#[job]
async fn ping() {}

async fn uses(client: Client) -> jobqueue::Result<()> {
    client.enqueue::<ping>(()).await?;
    Ok(())
}

fn main() {
    let _ = uses;
}
