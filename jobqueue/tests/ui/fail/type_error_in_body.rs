#[jobqueue::job]
async fn send(args: String) -> Result<u32, String> {
    let n: u32 = args;
    Ok(n)
}

fn main() {}
