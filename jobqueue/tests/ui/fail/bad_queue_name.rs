#[jobqueue::job(queue = "email {high}")]
async fn send(_args: String) {}

fn main() {}
