use jobqueue::JobContext;

#[jobqueue::job]
async fn send(_args: String, _ctx: JobContext, _extra: u32) {}

fn main() {}
