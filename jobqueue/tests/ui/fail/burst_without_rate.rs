#[jobqueue::job(burst = 10, max_running = 5)]
async fn send(_args: String) {}

fn main() {}
