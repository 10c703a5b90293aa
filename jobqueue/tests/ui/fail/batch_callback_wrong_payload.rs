// A batch callback's payload is a BatchSummary of what on_complete is
// given: a callback taking something else is refused.
use jobqueue::{Client, job};

#[job]
async fn resize(path: String) {
    let _ = path;
}

#[job]
async fn album_done(label: String) {
    let _ = label;
}

async fn build(client: Client) -> jobqueue::Result<()> {
    client
        .batch()
        .add::<resize>("a.jpg".to_owned())
        .on_complete::<album_done, _>("album".to_owned())
        .enqueue()
        .await?;
    Ok(())
}

fn main() {
    let _ = build;
}
