#[jobqueue::job]
async fn send(_args: String) -> u32 {
    1
}

fn main() {}
