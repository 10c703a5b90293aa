#[jobqueue::job]
async fn send<T>(_args: T) {}

fn main() {}
