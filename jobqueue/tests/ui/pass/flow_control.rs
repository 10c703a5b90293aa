use std::time::Duration;

use jobqueue::definition::Job;
use jobqueue::{Rate, job};

#[derive(serde::Serialize, serde::Deserialize)]
struct Charge {
    tenant: u64,
}

fn tenant_of(c: &Charge) -> String {
    format!("tenant:{}", c.tenant)
}

#[job(queue = "billing", rate = "10/250ms", burst = 3, max_running = 4, priority = -2, rate_key = tenant_of)]
async fn charge(_args: Charge) {}

fn main() {
    assert_eq!(charge::PRIORITY, -2);
    assert_eq!(
        charge::LIMITS.rate,
        Some(Rate::new(10, Duration::from_millis(250)))
    );
    assert_eq!(charge::LIMITS.burst, Some(3));
    assert_eq!(
        charge::rate_key(&Charge { tenant: 7 }),
        Some("tenant:7".to_owned())
    );
}
