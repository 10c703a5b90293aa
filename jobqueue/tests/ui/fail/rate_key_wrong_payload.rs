#[derive(serde::Serialize, serde::Deserialize)]
struct Charge {
    tenant: u64,
}

#[jobqueue::job(rate_key = |tenant: &u64| tenant.to_string())]
async fn charge(_args: Charge) {}

fn main() {}
