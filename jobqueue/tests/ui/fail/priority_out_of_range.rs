#[jobqueue::job(priority = -4)]
async fn send(_args: String) {}

fn main() {}
