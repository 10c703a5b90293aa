// The payload is decoded from JSON, so it must be a type the job can name.
#[jobqueue::job]
async fn render(_args: impl serde::de::DeserializeOwned + Send) {}

fn main() {}
