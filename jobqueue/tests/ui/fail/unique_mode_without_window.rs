#[jobqueue::job(unique_mode = "window")]
async fn send(_args: String) {}

fn main() {}
