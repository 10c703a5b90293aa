#[jobqueue::job]
fn send(_args: String) {}

fn main() {}
