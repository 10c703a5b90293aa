#[jobqueue::job(visibility = "50ms")]
async fn send(_args: String) {}

fn main() {}
