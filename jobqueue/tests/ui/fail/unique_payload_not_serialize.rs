#[derive(serde::Deserialize)]
struct Refresh {
    user: u64,
}

#[jobqueue::job(unique_for = "10m")]
async fn refresh(args: Refresh) -> u64 {
    args.user
}

fn main() {}
