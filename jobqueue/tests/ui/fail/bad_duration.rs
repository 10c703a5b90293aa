#[jobqueue::job(visibility = "2 minutes")]
async fn send(_args: String) {}

fn main() {}
