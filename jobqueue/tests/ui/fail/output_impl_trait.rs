// The output is stored as JSON and read back by `wait`, so it must be a
// type the job can name.
#[jobqueue::job]
async fn render(args: String) -> impl serde::Serialize {
    args
}

fn main() {}
