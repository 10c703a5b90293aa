// Typed chains and batches compile when the types line up.
use jobqueue::workflow::BatchSummary;
use jobqueue::{Client, job};

#[job]
async fn fetch(url: String) -> Result<String, String> {
    Ok(url)
}

#[job]
async fn measure(body: String) -> Result<usize, String> {
    Ok(body.len())
}

#[job]
async fn report(length: usize) -> Result<String, String> {
    Ok(format!("{length} bytes"))
}

#[job]
async fn thumbnail(path: String) {
    let _ = path;
}

#[job(queue = "albums")]
async fn album_done(summary: BatchSummary<u64>) {
    let _ = (summary.succeeded, summary.payload);
}

async fn build(client: Client) -> jobqueue::Result<()> {
    let chain = client
        .chain::<fetch>("https://example.com".to_owned())
        .then::<measure>()
        .then::<report>()
        .enqueue()
        .await?;
    let text: String = chain.wait(std::time::Duration::from_secs(1)).await?;
    let _ = text;
    let batch = client
        .batch()
        .add::<thumbnail>("a.jpg".to_owned())
        .add::<fetch>("https://example.com".to_owned())
        .on_complete::<album_done, _>(7)
        .on_success::<album_done, _>(8)
        .enqueue()
        .await?;
    let _ = batch.wait(std::time::Duration::from_secs(1)).await?;
    Ok(())
}

fn main() {
    let _ = build;
}
