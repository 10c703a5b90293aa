struct Mailer;

impl Mailer {
    #[jobqueue::job]
    async fn send(&self, _args: String) {}
}

fn main() {}
