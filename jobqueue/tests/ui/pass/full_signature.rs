use jobqueue::definition::Job;
use jobqueue::{JobContext, job};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Welcome {
    pub to: String,
}

#[derive(Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
}

#[derive(Debug)]
pub struct SmtpError;

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("smtp")
    }
}

/// Docs and attributes stay on the function.
#[job(queue = "email", max_attempts = 3, visibility = "2m", timeout = "1h", name = "welcome")]
#[allow(clippy::unused_async)]
pub async fn send_welcome(args: Welcome, ctx: JobContext) -> Result<Receipt, SmtpError> {
    Ok(Receipt { id: format!("{}{}", ctx.id(), args.to) })
}

fn main() {
    assert_eq!(send_welcome::NAME, "welcome");
    assert_eq!(send_welcome::QUEUE, "email");
    assert_eq!(send_welcome::MAX_ATTEMPTS, 3);
    assert_eq!(send_welcome::VISIBILITY, std::time::Duration::from_secs(120));
    assert_eq!(send_welcome::TIMEOUT, Some(std::time::Duration::from_millis(3_600_000)));
    fn payload_is<T: Job<Payload = Welcome, Output = Receipt>>() {}
    payload_is::<send_welcome>();
    let _callable = send_welcome(Welcome { to: "a".into() }, JobContext::new("id").with_queue("email"));
}
