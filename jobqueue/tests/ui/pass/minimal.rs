use jobqueue::definition::Job;
use jobqueue::job;

#[job]
async fn ping(_args: u32) {}

#[job(visibility = 250)]
async fn unit_result(_args: Vec<String>) -> Result<(), String> {
    Ok(())
}

#[job]
async fn r#type(_args: ()) -> anyhow_like::Result<u8> {
    Ok(1)
}

mod anyhow_like {
    pub type Result<T> = std::result::Result<T, std::io::Error>;
}

fn main() {
    assert_eq!(ping::NAME, "ping");
    assert_eq!(ping::QUEUE, "jobs");
    assert_eq!(ping::MAX_ATTEMPTS, 3);
    assert_eq!(ping::VISIBILITY, std::time::Duration::from_secs(5));
    assert_eq!(ping::TIMEOUT, None);
    assert_eq!(unit_result::VISIBILITY, std::time::Duration::from_millis(250));
    assert_eq!(r#type::NAME, "type");
    let registry = jobqueue::registry::Registry::from_inventory().unwrap();
    assert_eq!(registry.jobs().count(), 3);
}
