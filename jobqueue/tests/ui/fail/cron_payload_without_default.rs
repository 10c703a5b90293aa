#[derive(serde::Serialize, serde::Deserialize)]
struct Needed {
    day: String,
}

#[jobqueue::job(cron = "0 0 3 * * *")]
async fn report(_args: Needed) {}

fn main() {}
