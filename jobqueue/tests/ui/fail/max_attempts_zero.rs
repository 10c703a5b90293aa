#[jobqueue::job(max_attempts = 0)]
async fn send(_args: String) {}

fn main() {}
