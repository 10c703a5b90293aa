use jobqueue::{Client, job};

#[job]
async fn send_welcome(_to: String) {}

async fn enqueue(client: Client) -> jobqueue::Result<()> {
    client.enqueue::<send_welcome>(42_u32).await?;
    Ok(())
}

fn main() {}
