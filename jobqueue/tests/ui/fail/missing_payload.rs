#[jobqueue::job]
async fn send() {}

fn main() {}
