// An unknown key is the only error: the job type is still generated, with
// the arguments that are valid, so the uses of `charge` add nothing to it.
use jobqueue::definition::Job;
use jobqueue::{Client, job};

#[job(queue = "billing", retries = 3)]
async fn charge(cents: u64) -> Result<String, String> {
    Ok(format!("{cents} cents"))
}

async fn uses(client: Client) -> jobqueue::Result<()> {
    client.enqueue::<charge>(500).await?;
    let _ = client.handle::<charge>("some-id")?;
    const _: () = assert!(charge::QUEUE.len() == 7, "queue = \"billing\" is kept");
    Ok(())
}

fn main() {
    let _ = uses;
}
