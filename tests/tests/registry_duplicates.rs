//! Two jobs with one name: the registry refuses to start and names both
//! modules. (Its own test binary: inventory registrations are per binary.)

use jobqueue::Error;
use jobqueue::definition::Job;
use jobqueue::registry::Registry;

mod billing {
    #[jobqueue::job(name = "notify")]
    pub(crate) async fn notify_billing(_args: String) {}
}

mod email {
    #[jobqueue::job]
    pub(crate) async fn notify(_args: String) {}
}

#[test]
fn two_jobs_with_one_name_fail_startup_naming_both_modules() {
    let _ = (billing::notify_billing::NAME, email::notify::NAME);
    match Registry::from_inventory() {
        Err(Error::DuplicateJob {
            name,
            first,
            second,
        }) => {
            assert_eq!(name, "notify");
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("registry_duplicates::billing", "registry_duplicates::email")
            );
        }
        other => panic!("expected DuplicateJob, got {other:?}"),
    }
    let message = Registry::from_inventory().unwrap_err().to_string();
    assert!(
        message.contains("registry_duplicates::billing")
            && message.contains("registry_duplicates::email"),
        "{message}"
    );
}
