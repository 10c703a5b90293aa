struct NotSerde;

#[jobqueue::job]
async fn send(_args: NotSerde) {}

fn main() {}
