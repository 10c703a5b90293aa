#[jobqueue::job]
async fn send(_args: String, _retries: u32) {}

fn main() {}
