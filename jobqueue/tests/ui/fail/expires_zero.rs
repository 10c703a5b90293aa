#[jobqueue::job(expires = "0s")]
async fn send(_args: String) {}

fn main() {}
