// A chain step's payload must be the output of the step before it:
// count_words outputs a usize, shout takes a String.
use jobqueue::{Client, job};

#[job]
async fn count_words(text: String) -> Result<usize, String> {
    Ok(text.split_whitespace().count())
}

#[job]
async fn shout(text: String) -> Result<String, String> {
    Ok(text.to_uppercase())
}

async fn build(client: Client) -> jobqueue::Result<()> {
    client
        .chain::<count_words>("a b c".to_owned())
        .then::<shout>()
        .enqueue()
        .await?;
    Ok(())
}

fn main() {
    let _ = build;
}
