// Each bad argument has its own error, and nothing else does: parsing goes
// on after a mistake, `tz` is not "missing cron" when cron is only wrong,
// and the uses of `charge` add nothing.
use jobqueue::{Client, job};

#[job(queue "billing", priority = 9, cron = "61 * * * *", tz = "Mars/Base", max_attempts = 2)]
async fn charge(cents: u64) {
    let _ = cents;
}

async fn uses(client: Client) -> jobqueue::Result<()> {
    client.enqueue::<charge>(500).await?;
    Ok(())
}

fn main() {
    let _ = uses;
}
