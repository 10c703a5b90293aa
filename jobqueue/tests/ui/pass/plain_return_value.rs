// A job may return any Serialize value (the run always succeeds with it) or
// any Result-like alias (an Err fails the run).
use jobqueue::JobError;

type JobResult<T> = Result<T, JobError>;

#[jobqueue::job]
async fn count(args: String) -> u32 {
    args.len() as u32
}

#[jobqueue::job]
async fn parse(args: String) -> JobResult<u16> {
    Ok(args.parse()?)
}

fn main() {
    fn output_of<T: jobqueue::definition::Job>() -> &'static str {
        std::any::type_name::<T::Output>()
    }
    assert_eq!(output_of::<count>(), "u32");
    assert_eq!(output_of::<parse>(), "u16");
}
