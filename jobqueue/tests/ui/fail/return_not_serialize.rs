struct NotSerialize;

#[jobqueue::job]
async fn send(_args: String) -> NotSerialize {
    NotSerialize
}

fn main() {}
