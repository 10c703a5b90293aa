// A signature error is the only error when the payload and output can still
// be read from it: the job type is generated, so the uses add nothing.
use jobqueue::{Client, job};

#[job]
fn charge(cents: u64) -> Result<String, String> {
    Ok(format!("{cents} cents"))
}

async fn uses(client: Client) -> jobqueue::Result<()> {
    let handle = client.enqueue::<charge>(500).await?;
    let text: String = handle.wait(std::time::Duration::from_secs(1)).await?;
    let _ = text;
    Ok(())
}

fn main() {
    let _ = uses;
}
