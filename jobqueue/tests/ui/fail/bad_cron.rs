#[jobqueue::job(cron = "61 * * * *")]
async fn report(_args: ()) {}

fn main() {}
