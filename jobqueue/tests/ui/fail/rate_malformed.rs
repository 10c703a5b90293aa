#[jobqueue::job(rate = "100 per second")]
async fn send(_args: String) {}

fn main() {}
