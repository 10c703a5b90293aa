struct Opaque;

#[jobqueue::job]
async fn send(_args: String) -> Result<(), Opaque> {
    Err(Opaque)
}

fn main() {}
