// A bad `#[job(...)]` argument is the only error: the job type is still
// generated, so every use of `charge` below compiles and adds nothing to it.
use jobqueue::definition::Job;
use jobqueue::{Client, Runner, job};

#[job(queue = "billing", backoff = "100ms")]
async fn charge(cents: u64) -> Result<String, String> {
    Ok(format!("{cents} cents"))
}

#[job]
async fn receipt(text: String) {
    let _ = text;
}

async fn uses(client: Client) -> jobqueue::Result<()> {
    let handle = client.enqueue::<charge>(500).await?;
    let text: String = handle.wait(std::time::Duration::from_secs(1)).await?;
    let _ = text;
    let _ = client.handle::<charge>("some-id")?;
    client.chain::<charge>(700).then::<receipt>().enqueue().await?;
    let _ = client.batch().add::<charge>(900).enqueue().await?;
    let _ = Runner::builder(client).queues([charge::QUEUE]);
    Ok(())
}

fn main() {
    let _ = uses;
}
