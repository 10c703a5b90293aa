#[jobqueue::job(cron = "0 0 3 * * *", tz = "Europe/Berlln")]
async fn report(_args: ()) {}

fn main() {}
