#[jobqueue::job(queue = "email", retries = 3)]
async fn send(_args: String) {}

fn main() {}
