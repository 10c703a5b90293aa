#[jobqueue::job(queue = "email", queue = "sms")]
async fn send(_args: String) {}

fn main() {}
