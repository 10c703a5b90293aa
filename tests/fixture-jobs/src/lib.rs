//! Jobs defined in a library crate of their own: linking this crate is all
//! it takes for them to register.

use jobqueue::{JobContext, JobError, job};
use serde::{Deserialize, Serialize};

/// An image to resize.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resize {
    /// Where the image is.
    pub url: String,
    /// The width wanted.
    pub width: u32,
}

/// What a resize produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resized {
    /// Where the result is.
    pub url: String,
}

/// Resizes an image; widths over 10,000 fail for good.
#[job(queue = "images", max_attempts = 4, visibility = "30s")]
pub async fn resize_image(args: Resize, ctx: JobContext) -> Result<Resized, JobError> {
    if args.width > 10_000 {
        return Err(JobError::permanent(format!(
            "width {} is too large",
            args.width
        )));
    }
    Ok(Resized {
        url: format!("{}?w={}&attempt={}", args.url, args.width, ctx.attempt()),
    })
}

/// An invoice to send: the payload reference clients use (`kind` routes it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invoice {
    /// The job kind, as reference clients write it.
    #[serde(default)]
    pub kind: String,
    /// Who gets it.
    pub recipient: String,
}

/// Sends an invoice; a recipient of "flaky" fails (retryably).
#[job(queue = "billing", name = "invoice")]
pub async fn send_invoice(args: Invoice) -> Result<String, String> {
    if args.recipient == "flaky" {
        return Err("mail server unavailable".into());
    }
    Ok(format!("sent to {}", args.recipient))
}

/// Another job on the billing queue, so routing needs the payload kind.
#[job(queue = "billing", name = "refund")]
pub async fn refund(args: Invoice) -> Result<String, String> {
    Ok(format!("refunded {}", args.recipient))
}
