//! A property test: random interleavings of every queue operation against a
//! real Redis, with garbage written into job hashes, checked against a model.
//!
//! A case is a list of up to [`MAX_OPS`] operations: enqueue (batches, pool
//! ids that collide, delays), claim, complete, fail (retry, backoff,
//! permanent), release, extend, the two sweeps, promote, pause and resume,
//! delete, retrying dead letters, reads, and calls sent twice as a retry after
//! a lost reply would send them (a settle with the same `ClaimedJob`, a claim
//! request with the same id and tokens, an enqueue of the same id, a
//! delete). Garbage goes into the hashes of waiting jobs: payloads that are
//! not JSON or not UTF-8, fields that are not numbers, missing fields, a
//! deleted hash, a bad `completed_ttl_s`, and (behind a switch) a key of
//! another type; into claimed jobs only where their settles do not look
//! (payload, `enqueued_at_ms`, `id`) and `completed_ttl_s`.
//!
//! The model ([`Model`]) knows every job's state, attempts, holder and
//! settling token, the exact order of every list and the counters, and
//! predicts each reply. Time matters only where a lease runs out or a delay
//! passes: short leases (100 ms) and short delays are waited out by polling
//! the Redis clock until the state is reached, never by sleeping a guess; a
//! sweep that is not waited for may take back any short lease that has run
//! out, and must take back every one known to have run out. A completed
//! job's TTL is made to run out with `PEXPIRE 1`, then waited for.
//!
//! After every operation [`World::check`] reads Redis directly (the lists,
//! the leases and scheduled sets, every job key, the stats hash) and checks:
//! every id is in at most one list and in the one its hash's status names;
//! every dead letter and completed job is listed; tokens and leases agree;
//! the lists, hashes, TTLs and counters are exactly the model's; no key is
//! left that the queue does not own. A job that completed is never handed out
//! again, and a job is only handed out again after its previous claim ended
//! by a retry, a release or a lease loss ([`World::log_claim`]).
//!
//! One private `redis-server` serves all cases; each case flushes it and uses
//! a fresh queue name. On failure the message names the seed and the shrunk
//! sequence, step by step; rerun it with
//! `PROPTEST_RNG_SEED=<seed> cargo nextest run -p jobqueue-tests --test interleavings`.
//! `PROPTEST_CASES=<n>` runs more cases; `INTERLEAVINGS_TRACE=1` prints
//! every case's steps.
//!
//! Switches: behaviours that are wrong today (issue 13) are generated only
//! when their switch is on. Each is one line to flip once its fix lands.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, UNIX_EPOCH};

use jobqueue::client::EnqueueOptions;
use jobqueue::connection::Connection;
use jobqueue::queue::{Ack, ClaimedJob, JobStatus, NewJob, Queue, QueueOptions};
use jobqueue_tests::{RedisServer, unique_key};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner,
};
use redis::aio::MultiplexedConnection;
use serde_json::json;

// The model's rule for the numeric fields (`attempts`, `max_attempts`,
// `visibility_ms`, `completed_ttl_s`): a number is decimal digits only,
// within `u32`; anything else is not a number, and a claim fails the job
// with the reason (a bad `completed_ttl_s` falls back to the queue's TTL).
// Lua's `tonumber` reads the values below as numbers (issue 13 item 3).

/// `nan`, `NaN`, `inf`, `-inf`, `infinity`: claim.lua hands out a job whose
/// `max_attempts` is one of them (nan: it never runs out of attempts) or
/// whose `visibility_ms` is inf; `attempts = nan` is stamped as a garbage
/// count before the Rust side refuses the job; `visibility_ms = nan` fails
/// in `ZADD` after the job was moved and stamped, leaving it in processing
/// without a lease, where no sweep takes it back.
const NAN_AND_INF_NUMBERS_FIXED: bool = true;
/// `0x10`, `1e3`, `0X1A`: Lua reads hex and exponents, the Rust side
/// (`JobRecord`) does not: `max_attempts = 1e3` gives 1000 attempts,
/// `visibility_ms = 0x10` a 16 ms lease, `completed_ttl_s = 0x10` a 16 s TTL.
const HEX_AND_EXPONENT_NUMBERS_FIXED: bool = true;
/// `1.5`, ` 2`, `2 `, `+2`, `-1`: fractions, blanks and signs; a job with
/// such `attempts`, `max_attempts` or `visibility_ms` is handed out
/// (`attempts = 1.5` becomes `2`), `completed_ttl_s = " 2"` gives 2 s.
const FRACTIONS_BLANKS_AND_SIGNS_FIXED: bool = true;
/// `4294967296`, `99999999999999999999`: beyond `u32`, which the Rust side
/// refuses and Lua accepted in `max_attempts`; in `visibility_ms` the first
/// is a 50-day lease (valid: leases go up to a year), the second is not.
const HUGE_NUMBERS_FIXED: bool = true;
/// A string, list or set at a job's key: claim.lua moves the id to
/// processing and then fails with WRONGTYPE, leaving it there for good, and
/// the sweep, delete, settles and reads fail on it (issue 13: wrong-type keys
/// at a job's key). The model expects such an id to be dropped like an id
/// without a hash, and settles, extends, delete and reads to treat it as no
/// job.
const WRONG_TYPE_AT_JOB_KEY_FIXED: bool = true;
/// A claim request sent again after its reply was lost, with the queue
/// paused in between, answers "paused" instead of the jobs its first run
/// took, which stay leased to nobody (issue 13: a claim replayed after a
/// pause).
const CLAIM_REPLAY_AFTER_PAUSE_FIXED: bool = true;
/// A settle sent again after its first send applied answers
/// `Ack::Duplicate`; once the job's hash was trimmed off the history it
/// answers `Ack::LeaseLost` (issue 13: acks after the history is trimmed).
/// Off, either answer is accepted there.
const ACKS_AFTER_TRIM_FIXED: bool = true;

/// A payload that is not UTF-8 makes `get_jobs` fail for the whole batch
/// ("Cannot convert from UTF-8"), though the claim path reads such a job and
/// fails it with the reason. Off, reads leave such jobs out. Fixed, the
/// model expects a record for the job (new in issue 13's property test).
const NON_UTF8_READS_FIXED: bool = true;

/// A completed job's hash that expired (its `completed_ttl`) leaves its id
/// in the completed history; enqueueing the same id again then lists it in
/// pending and completed at once, and trimming the stale entry later deletes
/// the new job's hash if that completed too (new in issue 13's property
/// test). Off, only jobs with random ids expire, so no id comes back. Fixed,
/// the model expects the enqueue that writes the new hash to take the stale
/// entry out of the history.
const EXPIRED_COMPLETED_ENTRIES_FIXED: bool = false;

/// Cases per run unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 64;
/// Most operations in one case.
const MAX_OPS: usize = 60;
/// The queue's lease: long enough that it never runs out within a case.
const LONG_VISIBILITY: Duration = Duration::from_secs(120);
/// A job's own short lease, for jobs whose lease is meant to run out.
const SHORT_VISIBILITY_MS: u64 = 100;
/// A lease at least this long never runs out within a case.
const LONG_ENOUGH_MS: u64 = 10_000;
/// A delay that never passes within a case.
const LONG_DELAY: Duration = Duration::from_secs(3600);
/// Ids chosen by the caller, shared by the cases' enqueues so they collide.
const POOL_IDS: [&str; 4] = ["p0", "p1", "p2", "p3"];
/// An id never enqueued.
const UNKNOWN_ID: &str = "never-enqueued";
/// The longest wait for the Redis clock to pass a lease or a due time.
const CLOCK_WAIT: Duration = Duration::from_secs(10);

/// Payloads that are not JSON.
const BAD_PAYLOADS: &[&str] = &[
    "not json",
    "{",
    "",
    "{\"a\":1",
    "[1,",
    "nul",
    "\"unterminated",
    "{}}",
    "\u{1}",
];
/// Fields a garbage step may remove.
const DROPPABLE_FIELDS: &[&str] = &[
    "payload",
    "attempts",
    "status",
    "max_attempts",
    "visibility_ms",
    "enqueued_at_ms",
    "id",
    "claim_token",
    "completed_ttl_s",
];
/// Numbers for `attempts` and `max_attempts`.
const COUNTS: &[&str] = &["0", "1", "2", "5", "7"];
/// Numbers for `visibility_ms`: a short lease and a long one.
const LEASES: &[&str] = &["100", "60000"];
/// Numbers for `completed_ttl_s`, in seconds (0 keeps the hash until
/// trimmed; above a year the queue's TTL applies).
const TTLS: &[&str] = &["0", "60", "600", "31536001"];
/// Words that are no number to Lua's `tonumber` either.
const WORDS: &[&str] = &["abc", "", "many", "3 tries"];
const NAN_AND_INF: &[&str] = &["nan", "NaN", "inf", "-inf", "infinity"];
const HEX_AND_EXPONENT: &[&str] = &["0x10", "1e3", "0X1A"];
const FRACTIONS_BLANKS_AND_SIGNS: &[&str] = &["1.5", " 2", "2 ", "+2", "-1"];
const HUGE: &[&str] = &["4294967296", "99999999999999999999"];
/// Key types a garbage step may put at a job's key.
const WRONG_TYPES: &[&str] = &["string", "list", "set", "zset"];

// ---------------------------------------------------------------------------
// Operations

/// Picks one of the candidates an operation finds at run time.
#[derive(Clone, Copy)]
struct Sel(u16);

impl Sel {
    fn of(self, len: usize) -> usize {
        usize::from(self.0) % len
    }
}

impl fmt::Debug for Sel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which claim a settle uses: one that holds its job, or any made so far.
#[derive(Debug, Clone, Copy)]
struct Pick {
    held: bool,
    sel: Sel,
}

#[derive(Debug, Clone, Copy)]
enum Delay {
    Now,
    /// `EnqueueOptions::at` a time long past: pending at once.
    Past,
    /// This many ms: waited out by `Promote`.
    Short(u64),
    Long,
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    /// An id from [`POOL_IDS`], else a random one.
    pool: Option<usize>,
    max_attempts: Option<u32>,
    /// `EnqueueOptions::completed_ttl`, in seconds.
    completed_ttl: Option<u64>,
    short_visibility: bool,
    delay: Delay,
    named: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailHow {
    Retry,
    /// `fail_with_delay` of this many ms.
    RetryAfter(u64),
    RetryAfterLong,
    Permanent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    Complete,
    Fail(FailHow),
    Release,
}

/// What happens between a claim request and its second send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Between {
    Nothing,
    /// The queue is paused.
    Pause,
    /// An operator deletes the first job the request took.
    DeleteOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Garbage {
    Payload(&'static str),
    PayloadNotUtf8,
    DropField(&'static str),
    Number(&'static str, &'static str),
    DeleteHash,
    WrongType(&'static str),
    /// `completed_ttl_s`, which settle.lua reads.
    CompletedTtl(&'static str),
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(Vec<Spec>),
    /// One job with a fresh caller-chosen id, sent twice.
    EnqueueTwice(Spec),
    Claim {
        n: usize,
        wait: bool,
    },
    /// One claim request sent twice with the same id and tokens.
    ClaimTwice {
        n: usize,
        between: Between,
    },
    Settle {
        pick: Pick,
        how: Settle,
        twice: bool,
    },
    Extend(Vec<Pick>),
    Sweep {
        walk: bool,
        wait_for_expiry: bool,
    },
    Promote,
    /// A completed job's TTL runs out.
    ExpireCompleted(Sel),
    Pause,
    Resume,
    /// `delete_job`, sent twice when the flag is set.
    Delete(Sel, bool),
    RetryFailed(Option<Sel>),
    Garbage {
        target: Sel,
        what: Garbage,
    },
    Read,
}

fn sel() -> impl Strategy<Value = Sel> {
    any::<u16>().prop_map(Sel)
}

fn pick() -> impl Strategy<Value = Pick> {
    (prop::bool::weighted(0.8), sel()).prop_map(|(held, sel)| Pick { held, sel })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::option::weighted(0.3, 0..POOL_IDS.len()),
        prop::option::weighted(0.4, 1u32..=4),
        prop::option::weighted(0.2, prop::sample::select(&[0u64, 60, 600][..])),
        prop::bool::weighted(0.3),
        prop_oneof![
            6 => Just(Delay::Now),
            1 => Just(Delay::Past),
            2 => (1u64..=30).prop_map(Delay::Short),
            1 => Just(Delay::Long),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(pool, max_attempts, completed_ttl, short_visibility, delay, named)| Spec {
                pool,
                max_attempts,
                completed_ttl,
                short_visibility,
                delay,
                named,
            },
        )
}

fn fail_how() -> impl Strategy<Value = FailHow> {
    prop_oneof![
        4 => Just(FailHow::Retry),
        1 => (1u64..=30).prop_map(FailHow::RetryAfter),
        1 => Just(FailHow::RetryAfterLong),
        2 => Just(FailHow::Permanent),
    ]
}

/// Garbage for a numeric field: `numbers` of its own, words, and the odd
/// numbers the switches allow.
fn number_values(numbers: &[&'static str]) -> Vec<&'static str> {
    let mut values = numbers.to_vec();
    values.extend_from_slice(WORDS);
    for (on, group) in [
        (NAN_AND_INF_NUMBERS_FIXED, NAN_AND_INF),
        (HEX_AND_EXPONENT_NUMBERS_FIXED, HEX_AND_EXPONENT),
        (FRACTIONS_BLANKS_AND_SIGNS_FIXED, FRACTIONS_BLANKS_AND_SIGNS),
        (HUGE_NUMBERS_FIXED, HUGE),
    ] {
        if on {
            values.extend_from_slice(group);
        }
    }
    values
}

fn garbage() -> impl Strategy<Value = Garbage> {
    let mut kinds: Vec<(u32, BoxedStrategy<Garbage>)> = vec![
        (
            3,
            prop::sample::select(BAD_PAYLOADS)
                .prop_map(Garbage::Payload)
                .boxed(),
        ),
        (1, Just(Garbage::PayloadNotUtf8).boxed()),
        (
            3,
            prop::sample::select(DROPPABLE_FIELDS)
                .prop_map(Garbage::DropField)
                .boxed(),
        ),
        (
            3,
            (
                prop::sample::select(&["attempts", "max_attempts"][..]),
                prop::sample::select(number_values(COUNTS)),
            )
                .prop_map(|(field, value)| Garbage::Number(field, value))
                .boxed(),
        ),
        (
            1,
            prop::sample::select(number_values(LEASES))
                .prop_map(|value| Garbage::Number("visibility_ms", value))
                .boxed(),
        ),
        (1, Just(Garbage::DeleteHash).boxed()),
        (
            1,
            prop::sample::select(number_values(TTLS))
                .prop_map(Garbage::CompletedTtl)
                .boxed(),
        ),
    ];
    if WRONG_TYPE_AT_JOB_KEY_FIXED {
        kinds.push((
            1,
            prop::sample::select(WRONG_TYPES)
                .prop_map(Garbage::WrongType)
                .boxed(),
        ));
    }
    Union::new_weighted(kinds)
}

fn op() -> impl Strategy<Value = Op> {
    let settle = prop_oneof![
        5 => Just(Settle::Complete),
        4 => fail_how().prop_map(Settle::Fail),
        2 => Just(Settle::Release),
    ];
    prop_oneof![
        10 => prop::collection::vec(spec(), 1..=3).prop_map(Op::Enqueue),
        1 => spec().prop_map(Op::EnqueueTwice),
        10 => (1usize..=3, prop::bool::weighted(0.2)).prop_map(|(n, wait)| Op::Claim { n, wait }),
        2 => (1usize..=2, 0..3).prop_map(|(n, between)| Op::ClaimTwice {
            n,
            between: match between {
                1 if CLAIM_REPLAY_AFTER_PAUSE_FIXED => Between::Pause,
                2 => Between::DeleteOne,
                _ => Between::Nothing,
            },
        }),
        12 => (pick(), settle, prop::bool::weighted(0.3))
            .prop_map(|(pick, how, twice)| Op::Settle { pick, how, twice }),
        2 => prop::collection::vec(pick(), 1..=3).prop_map(Op::Extend),
        2 => (any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(walk, wait_for_expiry)| Op::Sweep { walk, wait_for_expiry }),
        1 => Just(Op::Promote),
        1 => sel().prop_map(Op::ExpireCompleted),
        1 => Just(Op::Pause),
        3 => Just(Op::Resume),
        1 => (sel(), prop::bool::weighted(0.3)).prop_map(|(sel, twice)| Op::Delete(sel, twice)),
        1 => prop::option::weighted(0.7, sel()).prop_map(Op::RetryFailed),
        4 => (sel(), garbage()).prop_map(|(target, what)| Op::Garbage { target, what }),
        1 => Just(Op::Read),
    ]
}

/// How one case's queue is configured.
#[derive(Debug, Clone, Copy)]
struct CaseOptions {
    max_attempts: u32,
    /// The queue's completed TTL in seconds (0: until trimmed).
    completed_ttl: u64,
    completed_history: usize,
    failed_history: usize,
}

fn case_options() -> impl Strategy<Value = CaseOptions> {
    (
        1u32..=3,
        prop::sample::select(&[0u64, 300][..]),
        2usize..=6,
        2usize..=6,
    )
        .prop_map(
            |(max_attempts, completed_ttl, completed_history, failed_history)| CaseOptions {
                max_attempts,
                completed_ttl,
                completed_history,
                failed_history,
            },
        )
}

/// How often each notable outcome happened in this run, printed at the end
/// so a run shows what it exercised.
static TALLY: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn tally(what: &'static str) {
    *TALLY.lock().unwrap().entry(what).or_default() += 1;
}

// ---------------------------------------------------------------------------
// The model

/// Where a job is, by the status its hash should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Processing,
    Scheduled,
    Completed,
    Failed,
    /// In no list: trimmed off a history, deleted, or its hash was deleted
    /// by garbage and a claim or promote dropped the id.
    Gone,
}

impl State {
    fn status(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Scheduled => "scheduled",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Gone => "(none)",
        }
    }
}

/// What stands at a job's key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Present,
    /// Deleted by a garbage step.
    Missing,
    /// Replaced by a key of another type by a garbage step.
    WrongType(&'static str),
    /// Deleted when trimmed off the completed or failed history.
    Trimmed,
    /// Deleted by `delete_job`.
    Deleted,
    /// A completed job's hash whose TTL ran out; the id stays listed.
    Expired,
}

/// The `settled_token` field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settled {
    Never,
    Token(String),
    /// Set by a claim made inside `claim_many` whose token the test never saw.
    Unknown,
}

/// How a claim ended, as the test saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    Retrying,
    Released,
    Failed,
    LeaseLost,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Claimed(String),
    Ended(String, End),
    Revived,
}

/// One life of one id: from the enqueue that wrote its hash until the hash
/// is gone and the id is enqueued again.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    explicit: bool,
    state: State,
    hash: Hash,
    status_missing: bool,
    attempts: u64,
    max_field: Option<u64>,
    vis_ms: u64,
    /// `completed_ttl_s`: absent, or the TTL it gives (`None`: not a
    /// number, so the queue's applies).
    ttl_field: Option<Option<u64>>,
    /// Numeric fields holding something that is not a number.
    bad_numbers: BTreeSet<&'static str>,
    bad_payload: bool,
    /// The payload is not UTF-8.
    payload_not_utf8: bool,
    /// `attempts` was removed by a garbage step and not written since.
    no_attempts: bool,
    /// `claim_token` was removed by a garbage step and not written since.
    no_claim_token: bool,
    holder: Option<String>,
    settled: Settled,
    /// Every token that ever settled this life: each answers `Duplicate` to
    /// a repeat once `queue:{name}:settled` remembers ended claims.
    settled_tokens: BTreeSet<String>,
    /// A short delay's due time, at most (Redis ms).
    due_by: Option<u64>,
    /// A short lease's deadline, at most (Redis ms).
    deadline_by: Option<u64>,
    log: Vec<(usize, Ev)>,
}

impl Job {
    fn short_lease(&self) -> bool {
        self.vis_ms < LONG_ENOUGH_MS
    }

    /// The TTL settle.lua gives the hash, in seconds (0: none).
    fn completed_ttl(&self, queue_ttl: u64) -> u64 {
        match self.ttl_field {
            Some(Some(ttl)) if ttl <= 31_536_000 => ttl,
            _ => queue_ttl,
        }
    }
}

/// A claim the test was handed.
#[derive(Debug, Clone)]
struct Claim {
    life: usize,
    job: ClaimedJob,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    enqueued: u64,
    completed: u64,
    failed: u64,
    reclaimed: u64,
    retried: u64,
    revived: u64,
}

/// What one step of the claim script does with an id it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Claimed(usize),
    /// Claimed by the script, then failed by the Rust side (payload not JSON
    /// or not UTF-8), inside `claim_many`.
    Unusable(usize),
    Buried,
    Dropped,
}

#[derive(Debug)]
struct Model {
    opts: CaseOptions,
    lives: Vec<Job>,
    current: HashMap<String, usize>,
    /// Every id in order of first appearance.
    seen: Vec<String>,
    /// Head (left) first, as `LRANGE 0 -1` shows them.
    pending: VecDeque<String>,
    processing: VecDeque<String>,
    completed: VecDeque<String>,
    failed: VecDeque<String>,
    scheduled: BTreeSet<String>,
    paused: bool,
    counters: Counters,
    /// Ids at wrong-type keys that a claim passed: a fix may drop or bury
    /// them, so `failed_total` may be this much higher.
    failed_slack: u64,
    /// Wrong-type ids a fix may have put in the failed list.
    corrupt: BTreeSet<String>,
    claims: Vec<Claim>,
    step: usize,
}

fn lrem(list: &mut VecDeque<String>, id: &str) -> bool {
    match list.iter().position(|x| x == id) {
        Some(i) => {
            list.remove(i);
            true
        }
        None => false,
    }
}

impl Model {
    fn new(opts: CaseOptions) -> Self {
        Self {
            opts,
            lives: Vec::new(),
            current: HashMap::new(),
            seen: Vec::new(),
            pending: VecDeque::new(),
            processing: VecDeque::new(),
            completed: VecDeque::new(),
            failed: VecDeque::new(),
            scheduled: BTreeSet::new(),
            paused: false,
            counters: Counters::default(),
            failed_slack: 0,
            corrupt: BTreeSet::new(),
            claims: Vec::new(),
            step: 0,
        }
    }

    fn cur(&self, id: &str) -> Option<usize> {
        self.current.get(id).copied()
    }

    fn max_of(&self, life: usize) -> u64 {
        self.lives[life]
            .max_field
            .unwrap_or(u64::from(self.opts.max_attempts))
    }

    fn log(&mut self, life: usize, ev: Ev) {
        let step = self.step;
        self.lives[life].log.push((step, ev));
    }

    /// True when the job's key exists with an id the test can see listed.
    fn key_exists(&self, id: &str) -> bool {
        self.cur(id)
            .is_some_and(|l| matches!(self.lives[l].hash, Hash::Present | Hash::WrongType(_)))
    }

    /// Pushes `id` onto a history list and trims it, deleting the hashes of
    /// trimmed ids still in that list's state (`push_history`).
    fn push_history(&mut self, completed: bool, id: &str) {
        let (cap, state) = if completed {
            (self.opts.completed_history, State::Completed)
        } else {
            (self.opts.failed_history, State::Failed)
        };
        let list = if completed {
            &mut self.completed
        } else {
            &mut self.failed
        };
        list.push_front(id.to_owned());
        let mut popped = Vec::new();
        while list.len() > cap {
            popped.extend(list.pop_back());
        }
        for old in popped {
            if let Some(l) = self.cur(&old) {
                let job = &mut self.lives[l];
                if job.hash == Hash::Present && job.state == state && !job.status_missing {
                    tally("history trimmed a job");
                    job.hash = Hash::Trimmed;
                    job.state = State::Gone;
                }
            }
        }
    }

    /// Moves a job already out of its list to the dead letters (`bury`).
    fn bury(&mut self, life: usize) {
        let id = self.lives[life].id.clone();
        let job = &mut self.lives[life];
        job.state = State::Failed;
        job.status_missing = false;
        job.no_claim_token = false;
        job.holder = None;
        job.deadline_by = None;
        job.due_by = None;
        self.counters.failed += 1;
        self.push_history(false, &id);
    }

    /// One run of claim.lua with `n` tokens: which ids it takes and what it
    /// does with each. Claimed jobs get an empty holder, filled in from the
    /// reply. `rust_fails` says the Rust side fails jobs it cannot decode
    /// (inside `claim_many`; `__claim_request` hands them out).
    fn claim_run(&mut self, n: usize, rust_fails: bool) -> Vec<Taken> {
        let mut out = Vec::new();
        let mut tokens = n;
        let mut unusable = Vec::new();
        while tokens > 0 {
            let Some(id) = self.pending.pop_back() else {
                break;
            };
            self.processing.push_front(id.clone());
            let Some(life) = self.cur(&id) else {
                lrem(&mut self.processing, &id);
                out.push(Taken::Dropped);
                tally("claim dropped an id");
                continue;
            };
            let job = &self.lives[life];
            match job.hash {
                Hash::Present => {}
                Hash::WrongType(_) => {
                    lrem(&mut self.processing, &id);
                    self.failed_slack += 1;
                    self.corrupt.insert(id.clone());
                    self.lives[life].state = State::Gone;
                    out.push(Taken::Dropped);
                    tally("claim dropped a wrong-type key");
                    continue;
                }
                _ => {
                    lrem(&mut self.processing, &id);
                    self.lives[life].state = State::Gone;
                    out.push(Taken::Dropped);
                    tally("claim dropped an id without a hash");
                    continue;
                }
            }
            if !job.bad_numbers.is_empty() || job.attempts >= self.max_of(life) {
                lrem(&mut self.processing, &id);
                self.bury(life);
                out.push(Taken::Buried);
                tally("claim buried a job");
                continue;
            }
            tokens -= 1;
            let job = &mut self.lives[life];
            job.attempts += 1;
            job.no_attempts = false;
            job.state = State::Processing;
            job.status_missing = false;
            job.no_claim_token = false;
            job.holder = Some(String::new());
            job.deadline_by = None;
            if job.bad_payload && rust_fails {
                tally("claim failed an undecodable job");
                unusable.push(life);
                out.push(Taken::Unusable(life));
            } else {
                out.push(Taken::Claimed(life));
            }
        }
        // The Rust side fails the undecodable jobs after the script, in order.
        for life in unusable {
            let id = self.lives[life].id.clone();
            lrem(&mut self.processing, &id);
            self.log(life, Ev::Claimed("?".into()));
            self.log(life, Ev::Ended("?".into(), End::Failed));
            self.bury(life);
            self.lives[life].settled = Settled::Unknown;
        }
        out
    }

    /// True when `claim` is the job's current holder.
    fn holds(&self, claim: &Claim) -> bool {
        let job = &self.lives[claim.life];
        self.cur(&job.id) == Some(claim.life)
            && job.hash == Hash::Present
            && job.state == State::Processing
            && job.holder.as_deref() == Some(claim.job.token())
    }

    /// The acks a settle with `claim` may answer, and the one it applies when
    /// the claim holds the job.
    fn expect_settle(&self, claim: &Claim, how: Settle) -> (Vec<Ack>, Option<Ack>) {
        if self.holds(claim) {
            let ack = match how {
                Settle::Complete => Ack::Completed,
                Settle::Release => Ack::Released,
                Settle::Fail(FailHow::Permanent) => Ack::Failed,
                Settle::Fail(_) => {
                    if self.lives[claim.life].attempts < self.max_of(claim.life) {
                        Ack::Retrying
                    } else {
                        Ack::Failed
                    }
                }
            };
            return (vec![ack], Some(ack));
        }
        let job = &self.lives[claim.life];
        let settled_here = job.settled == Settled::Token(claim.job.token().to_owned());
        let is_current = self.cur(&job.id) == Some(claim.life);
        if settled_here && is_current && job.hash == Hash::Present {
            return (vec![Ack::Duplicate], None);
        }
        if settled_here && job.hash == Hash::Trimmed && is_current && ACKS_AFTER_TRIM_FIXED {
            return (vec![Ack::Duplicate], None);
        }
        let settled_before = job.settled_tokens.contains(claim.job.token());
        if ACKS_AFTER_TRIM_FIXED && settled_before {
            // The claim ended the job once; the job moved on since (another
            // claim took it, its hash was trimmed, deleted or replaced by
            // hand), and the record of the ended claim still answers the
            // repeat.
            return (vec![Ack::Duplicate], None);
        }
        if settled_here && job.hash != Hash::Missing {
            // Trimmed, deleted, or enqueued again since.
            return (vec![Ack::Duplicate, Ack::LeaseLost], None);
        }
        (vec![Ack::LeaseLost], None)
    }

    fn held_short_leases(&self) -> Vec<usize> {
        (0..self.lives.len())
            .filter(|&l| {
                let job = &self.lives[l];
                self.cur(&job.id) == Some(l)
                    && job.state == State::Processing
                    && job.hash == Hash::Present
                    && job.deadline_by.is_some()
            })
            .collect()
    }
}

/// A number as the model reads one: decimal digits only, within `u32`.
fn strict_number(value: &str) -> Option<u64> {
    decimal(value).filter(|&n| n <= u64::from(u32::MAX))
}

/// A stored number as the scripts read `field`: counts fit a `u32`, a lease
/// lasts 100 ms to a year (so `4294967296` ms, some 50 days, is a lease).
fn field_number(field: &str, value: &str) -> Option<u64> {
    if field == "visibility_ms" {
        decimal(value).filter(|ms| (100..=31_536_000_000).contains(ms))
    } else {
        strict_number(value)
    }
}

/// Decimal digits only, as a number (none when it overflows a `u64`).
fn decimal(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn job_status(state: State) -> Option<JobStatus> {
    match state {
        State::Pending => Some(JobStatus::Pending),
        State::Processing => Some(JobStatus::Processing),
        State::Scheduled => Some(JobStatus::Scheduled),
        State::Completed => Some(JobStatus::Completed),
        State::Failed => Some(JobStatus::Failed),
        State::Gone => None,
    }
}

// ---------------------------------------------------------------------------
// Driving the real queue

/// The Redis server's clock in ms, the clock the scripts use.
async fn redis_now_ms(raw: &mut MultiplexedConnection) -> Result<u64, String> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(raw)
        .await
        .map_err(|e| format!("TIME: {e}"))?;
    Ok(secs * 1000 + micros / 1000)
}

/// Polls the Redis clock until it is past `ms`.
async fn wait_until_past(raw: &mut MultiplexedConnection, ms: u64) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if redis_now_ms(raw).await? > ms {
            return Ok(());
        }
        if started.elapsed() > CLOCK_WAIT {
            return Err(format!(
                "the Redis clock did not pass {ms} within {CLOCK_WAIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One case: the queue, a raw connection for garbage and checks, the model,
/// and the steps run so far in words.
struct World {
    q: Queue,
    raw: MultiplexedConnection,
    m: Model,
    trace: Vec<String>,
    labels: HashMap<String, String>,
    next_token: u64,
    next_replay: u64,
}

type Step = Result<(), String>;

impl World {
    /// A short name for an id in the trace.
    fn label(&mut self, id: &str) -> String {
        if let Some(label) = self.labels.get(id) {
            return label.clone();
        }
        let label = if id.len() == 16 {
            format!("j{}", self.labels.len())
        } else {
            id.to_owned()
        };
        self.labels.insert(id.to_owned(), label.clone());
        label
    }

    fn labels<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>) -> String {
        let names: Vec<String> = ids.into_iter().map(|id| self.label(id)).collect();
        format!("[{}]", names.join(", "))
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!("{:>4}: {line}", self.m.step));
    }

    fn fresh_token(&mut self) -> String {
        self.next_token += 1;
        format!("{:016x}", 0xabc0_0000_0000_0000_u64 + self.next_token)
    }

    async fn apply(&mut self, op: &Op) -> Step {
        match op {
            Op::Enqueue(specs) => self.enqueue(specs, None).await,
            Op::EnqueueTwice(spec) => {
                self.next_replay += 1;
                let id = format!("r{}", self.next_replay);
                self.enqueue(std::slice::from_ref(spec), Some(id)).await
            }
            Op::Claim { n, wait } => self.claim(*n, *wait).await,
            Op::ClaimTwice { n, between } => self.claim_twice(*n, *between).await,
            Op::Settle { pick, how, twice } => self.settle(*pick, *how, *twice).await,
            Op::Extend(picks) => self.extend(picks).await,
            Op::Sweep {
                walk,
                wait_for_expiry,
            } => self.sweep(*walk, *wait_for_expiry).await,
            Op::Promote => self.promote().await,
            Op::ExpireCompleted(sel) => self.expire_completed(*sel).await,
            Op::Pause => self.pause().await,
            Op::Resume => {
                self.note("resume".into());
                self.q.resume().await.map_err(|e| format!("resume: {e}"))?;
                self.m.paused = false;
                Ok(())
            }
            Op::Delete(sel, twice) => {
                self.delete(*sel).await?;
                if *twice {
                    self.delete(*sel).await?;
                }
                Ok(())
            }
            Op::RetryFailed(sel) => self.retry_failed(*sel).await,
            Op::Garbage { target, what } => self.garbage(*target, *what).await,
            Op::Read => self.read().await,
        }
    }

    async fn pause(&mut self) -> Step {
        self.note("pause".into());
        self.q.pause().await.map_err(|e| format!("pause: {e}"))?;
        self.m.paused = true;
        Ok(())
    }

    async fn enqueue(&mut self, specs: &[Spec], replayed_id: Option<String>) -> Step {
        let mut jobs = Vec::with_capacity(specs.len());
        let mut words = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            let mut options = EnqueueOptions::new();
            let id = replayed_id
                .clone()
                .or_else(|| spec.pool.map(|p| POOL_IDS[p].to_owned()));
            let mut word = id.clone().unwrap_or_else(|| "new".into());
            if let Some(id) = id {
                options = options.id(id);
            }
            if let Some(max) = spec.max_attempts {
                options = options.max_attempts(max);
                word.push_str(&format!(" max={max}"));
            }
            if let Some(ttl) = spec.completed_ttl {
                options = options.completed_ttl(Duration::from_secs(ttl));
                word.push_str(&format!(" ttl={ttl}s"));
            }
            if spec.short_visibility {
                options = options.visibility(Duration::from_millis(SHORT_VISIBILITY_MS));
                word.push_str(" short-lease");
            }
            options = match spec.delay {
                Delay::Now => options,
                Delay::Past => options.at(UNIX_EPOCH + Duration::from_secs(1)),
                Delay::Short(ms) => options.delay(Duration::from_millis(ms)),
                Delay::Long => options.delay(LONG_DELAY),
            };
            if !matches!(spec.delay, Delay::Now) {
                word.push_str(&format!(" {:?}", spec.delay));
            }
            let mut job = NewJob::new(&json!({ "n": k }))
                .map_err(|e| e.to_string())?
                .options(options);
            if spec.named {
                job = job.name("email");
            }
            jobs.push(job);
            words.push(word);
        }
        let sends = if replayed_id.is_some() { 2 } else { 1 };
        for send in 0..sends {
            let ids = self
                .q
                .submit_many(jobs.clone())
                .await
                .map_err(|e| format!("submit_many: {e}"))?;
            let after = redis_now_ms(&mut self.raw).await?;
            let (mut written, mut skipped, mut pushed) = (Vec::new(), Vec::new(), Vec::new());
            for (spec, id) in specs.iter().zip(&ids) {
                if self.m.key_exists(id) {
                    tally("enqueue skipped an existing id");
                    skipped.push(id.clone());
                    continue;
                }
                let (state, due_by) = match spec.delay {
                    Delay::Now | Delay::Past => (State::Pending, None),
                    Delay::Short(ms) => (State::Scheduled, Some(after + ms)),
                    Delay::Long => (State::Scheduled, None),
                };
                let life = self.m.lives.len();
                self.m.lives.push(Job {
                    id: id.clone(),
                    explicit: replayed_id.is_some() || spec.pool.is_some(),
                    state,
                    hash: Hash::Present,
                    status_missing: false,
                    attempts: 0,
                    max_field: spec.max_attempts.map(u64::from),
                    ttl_field: spec.completed_ttl.map(Some),
                    vis_ms: if spec.short_visibility {
                        SHORT_VISIBILITY_MS
                    } else {
                        millis(LONG_VISIBILITY)
                    },
                    bad_numbers: BTreeSet::new(),
                    bad_payload: false,
                    payload_not_utf8: false,
                    no_attempts: false,
                    no_claim_token: false,
                    holder: None,
                    settled: Settled::Never,
                    settled_tokens: BTreeSet::new(),
                    due_by,
                    deadline_by: None,
                    log: Vec::new(),
                });
                if EXPIRED_COMPLETED_ENTRIES_FIXED
                    && self
                        .m
                        .cur(id)
                        .is_some_and(|l| self.m.lives[l].hash == Hash::Expired)
                {
                    self.m.completed.retain(|x| x != id);
                }
                if self.m.current.insert(id.clone(), life).is_none() {
                    self.m.seen.push(id.clone());
                } else {
                    tally("an id enqueued again after its hash was gone");
                }
                self.m.counters.enqueued += 1;
                if state == State::Pending {
                    pushed.push(id.clone());
                } else {
                    self.m.scheduled.insert(id.clone());
                }
                written.push(id.clone());
            }
            for id in pushed {
                self.m.pending.push_front(id);
            }
            let again = if send == 1 { " again" } else { "" };
            let (written, skipped) = (self.labels(&written), self.labels(&skipped));
            self.note(format!(
                "enqueue{again} {words:?} -> wrote {written}, skipped {skipped}"
            ));
        }
        Ok(())
    }

    /// Checks the claims handed out against the ones the model predicted
    /// (lives, in order) and records them.
    fn take_claims(
        &mut self,
        what: &str,
        got: &[ClaimedJob],
        expected: &[usize],
        tokens: Option<&[String]>,
    ) -> Step {
        let got_ids: Vec<String> = got.iter().map(|j| j.id().to_owned()).collect();
        let expected_ids: Vec<String> = expected
            .iter()
            .map(|&l| self.m.lives[l].id.clone())
            .collect();
        let (g, e) = (self.labels(&got_ids), self.labels(&expected_ids));
        let first = self.m.claims.len();
        self.note(format!("{what} -> {g} as claims c{first}..; model: {e}"));
        for job in got {
            self.log_claim(job.id(), job.token())?;
            tally("job handed out");
        }
        if got_ids != expected_ids {
            return Err(format!("{what} handed out {g}; the model expected {e}"));
        }
        for (i, (job, &life)) in got.iter().zip(expected).enumerate() {
            // A job that does not decode comes out of the test hook as it
            // is, with attempt 0 (inside claim_many it is failed instead).
            let want = if self.m.lives[life].bad_payload {
                0
            } else {
                self.m.lives[life].attempts
            };
            if u64::from(job.attempt()) != want {
                return Err(format!(
                    "{what}: {} came with attempt {}, the model counts {want}",
                    self.label(job.id()),
                    job.attempt()
                ));
            }
            if let Some(tokens) = tokens
                && job.token() != tokens[i]
            {
                return Err(format!(
                    "{what}: claim {i} carries token {}, not the request's {}",
                    job.token(),
                    tokens[i]
                ));
            }
            let short = self.m.lives[life].short_lease();
            let slot = &mut self.m.lives[life];
            slot.holder = Some(job.token().to_owned());
            slot.deadline_by = short.then(|| job.lease_deadline_ms());
            self.m.claims.push(Claim {
                life,
                job: job.clone(),
            });
        }
        Ok(())
    }

    /// The history invariant, on what Redis handed out: a job that completed
    /// is never handed out again, and a job is handed out again only after
    /// its previous claim ended by a retry, a release or a lease loss (or
    /// failed and was sent back from the dead letters).
    fn log_claim(&mut self, id: &str, token: &str) -> Step {
        let label = self.label(id);
        let step = self.m.step;
        let Some(life) = self.m.cur(id) else {
            return Err(format!("{label} was handed out but never enqueued"));
        };
        let log = &self.m.lives[life].log;
        if let Some((at, _)) = log
            .iter()
            .find(|(_, ev)| matches!(ev, Ev::Ended(_, End::Completed)))
        {
            return Err(format!(
                "{label} completed at step {at} and was handed out again at step {step} \
                 without a lease loss"
            ));
        }
        if let Some(p) = log.iter().rposition(|(_, ev)| matches!(ev, Ev::Claimed(_))) {
            let (at, Ev::Claimed(previous)) = &log[p] else {
                unreachable!("rposition found a claim");
            };
            let after = &log[p + 1..];
            let ended = after.iter().any(|(_, ev)| {
                matches!(ev, Ev::Ended(t, End::Retrying | End::Released | End::LeaseLost) if t == previous)
            });
            let revived = after
                .iter()
                .any(|(_, ev)| matches!(ev, Ev::Ended(_, End::Failed)))
                && after.iter().any(|(_, ev)| *ev == Ev::Revived);
            if !ended && !revived {
                return Err(format!(
                    "{label} was handed out at step {at} and again at step {step}, \
                     and the first claim never ended by a retry, a release or a lease loss"
                ));
            }
        }
        self.m.log(life, Ev::Claimed(token.to_owned()));
        Ok(())
    }

    async fn claim(&mut self, n: usize, wait: bool) -> Step {
        let timeout = if wait {
            Duration::from_millis(10)
        } else {
            Duration::ZERO
        };
        let got = self
            .q
            .claim_many(n, timeout)
            .await
            .map_err(|e| format!("claim_many({n}): {e}"))?;
        let mut expected = Vec::new();
        if !self.m.paused {
            // claim_now: runs the script again while only unusable jobs came out.
            loop {
                let run = self.m.claim_run(n, true);
                let jobs: Vec<usize> = run
                    .iter()
                    .filter_map(|t| match t {
                        Taken::Claimed(l) => Some(*l),
                        _ => None,
                    })
                    .collect();
                if !jobs.is_empty() || run.len() == jobs.len() {
                    expected = jobs;
                    break;
                }
            }
        }
        self.take_claims(&format!("claim_many({n})"), &got, &expected, None)
    }

    /// A claim request sent twice with the same id and tokens, as a retry
    /// after a lost reply sends it; optionally with a pause in between.
    async fn claim_twice(&mut self, n: usize, between: Between) -> Step {
        let tokens: Vec<String> = (0..n).map(|_| self.fresh_token()).collect();
        let request = self.fresh_token();
        let first = self
            .q
            .__claim_request(&request, &tokens)
            .await
            .map_err(|e| format!("claim request: {e}"))?;
        let expected = self.one_claim_run(n);
        self.take_claims("claim request", &first, &expected, Some(&tokens))?;
        self.note("(its reply is lost)".into());
        let mut still: Vec<ClaimedJob> = first.clone();
        match between {
            Between::Nothing => {}
            Between::Pause => self.pause().await?,
            Between::DeleteOne => {
                if let Some(job) = first.first() {
                    let ids = self.ids_and_unknown();
                    let at = ids.iter().position(|id| id == job.id()).expect("a seen id");
                    self.delete(Sel(u16::try_from(at).expect("few ids")))
                        .await?;
                    still.remove(0);
                }
            }
        }
        let again = self
            .q
            .__claim_request(&request, &tokens)
            .await
            .map_err(|e| format!("claim request sent again: {e}"))?;
        if first.is_empty() {
            // The first run took nothing, so it left no request key: the
            // second is a new claim.
            let expected = self.one_claim_run(n);
            return self.take_claims("claim request sent again", &again, &expected, Some(&tokens));
        }
        let summary = |jobs: &[ClaimedJob]| {
            jobs.iter()
                .map(|j| (j.id().to_owned(), j.token().to_owned(), j.attempt()))
                .collect::<Vec<_>>()
        };
        let ids: Vec<String> = again.iter().map(|j| j.id().to_owned()).collect();
        let again_ids = self.labels(&ids);
        self.note(format!("claim request sent again -> {again_ids}"));
        tally("claim request answered again");
        if summary(&again) != summary(&still) {
            let ids: Vec<String> = still.iter().map(|j| j.id().to_owned()).collect();
            let still_ids = self.labels(&ids);
            return Err(format!(
                "the claim request sent again ({between:?} in between) answered {again_ids} \
                 instead of the claims its first run made that still hold, {still_ids}"
            ));
        }
        Ok(())
    }

    /// The lives one claim script run hands out, per the model.
    fn one_claim_run(&mut self, n: usize) -> Vec<usize> {
        if self.m.paused {
            return Vec::new();
        }
        self.m
            .claim_run(n, false)
            .into_iter()
            .filter_map(|t| match t {
                Taken::Claimed(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// A claim by `pick`: one that holds its job, else any made so far.
    fn pick_claim(&self, pick: Pick) -> Option<usize> {
        let held: Vec<usize> = (0..self.m.claims.len())
            .filter(|&c| self.m.holds(&self.m.claims[c]))
            .collect();
        if pick.held && !held.is_empty() {
            return Some(held[pick.sel.of(held.len())]);
        }
        (!self.m.claims.is_empty()).then(|| pick.sel.of(self.m.claims.len()))
    }

    async fn settle(&mut self, pick: Pick, how: Settle, twice: bool) -> Step {
        let Some(c) = self.pick_claim(pick) else {
            self.note(format!("{how:?}: no claim yet"));
            return Ok(());
        };
        let claim = self.m.claims[c].clone();
        let label = self.label(claim.job.id());
        for send in 0..if twice { 2 } else { 1 } {
            let (acks, applies) = self.m.expect_settle(&claim, how);
            let job = &claim.job;
            let ack = match how {
                Settle::Complete => self.q.complete(job, &json!({ "claim": c })).await,
                Settle::Release => self.q.release(job).await,
                Settle::Fail(FailHow::Retry) => self.q.fail(job, "boom").await,
                Settle::Fail(FailHow::RetryAfter(ms)) => {
                    self.q
                        .fail_with_delay(job, "boom", Duration::from_millis(ms))
                        .await
                }
                Settle::Fail(FailHow::RetryAfterLong) => {
                    self.q.fail_with_delay(job, "boom", LONG_DELAY).await
                }
                Settle::Fail(FailHow::Permanent) => self.q.fail_permanently(job, "boom").await,
            }
            .map_err(|e| format!("{how:?} with c{c} ({label}): {e}"))?;
            let after = redis_now_ms(&mut self.raw).await?;
            let again = if send == 1 { " again" } else { "" };
            self.note(format!(
                "{how:?}{again} with c{c} ({label}) -> {ack:?}; model: {acks:?}"
            ));
            if !acks.contains(&ack) {
                return Err(format!(
                    "{how:?}{again} with c{c} ({label}) answered {ack:?}; the model expected {acks:?}"
                ));
            }
            tally(match ack {
                Ack::Completed => "settle: completed",
                Ack::Retrying => "settle: retrying",
                Ack::Failed => "settle: failed",
                Ack::Released => "settle: released",
                Ack::Duplicate => "settle: duplicate",
                _ => "settle: lease lost",
            });
            if let Some(applied) = applies {
                self.m.apply_settle(&claim, how, applied, after);
            }
        }
        Ok(())
    }

    async fn extend(&mut self, picks: &[Pick]) -> Step {
        let cs: Vec<usize> = picks.iter().filter_map(|p| self.pick_claim(*p)).collect();
        if cs.is_empty() {
            self.note("extend: no claim yet".into());
            return Ok(());
        }
        let jobs: Vec<ClaimedJob> = cs.iter().map(|&c| self.m.claims[c].job.clone()).collect();
        let refs: Vec<&ClaimedJob> = jobs.iter().collect();
        let acks = self
            .q
            .extend_many(&refs)
            .await
            .map_err(|e| format!("extend_many: {e}"))?;
        let after = redis_now_ms(&mut self.raw).await?;
        let holds: Vec<bool> = cs
            .iter()
            .map(|&c| self.m.holds(&self.m.claims[c]))
            .collect();
        let expected: Vec<Ack> = holds
            .iter()
            .map(|&h| if h { Ack::Extended } else { Ack::LeaseLost })
            .collect();
        self.note(format!("extend {cs:?} -> {acks:?}; model: {expected:?}"));
        if acks != expected {
            return Err(format!(
                "extend of claims {cs:?} answered {acks:?}; the model expected {expected:?}"
            ));
        }
        for (&c, held) in cs.iter().zip(holds) {
            let life = self.m.claims[c].life;
            let job = &mut self.m.lives[life];
            if held && job.short_lease() {
                job.deadline_by = Some(after + job.vis_ms);
            }
        }
        Ok(())
    }

    async fn sweep(&mut self, walk: bool, wait_for_expiry: bool) -> Step {
        let short = self.m.held_short_leases();
        if wait_for_expiry
            && let Some(latest) = short
                .iter()
                .filter_map(|&l| self.m.lives[l].deadline_by)
                .max()
        {
            wait_until_past(&mut self.raw, latest).await?;
        }
        let before = redis_now_ms(&mut self.raw).await?;
        let report = if walk {
            self.q.reclaim_stuck().await
        } else {
            self.q.reclaim_expired().await
        }
        .map_err(|e| format!("sweep (walk: {walk}): {e}"))?;
        let (r, f, d) = (
            self.labels(&report.reclaimed),
            self.labels(&report.failed),
            self.labels(&report.dropped),
        );
        let name = if walk {
            "reclaim_stuck"
        } else {
            "reclaim_expired"
        };
        let waited = if wait_for_expiry {
            " after the short leases ran out"
        } else {
            ""
        };
        self.note(format!(
            "{name}{waited} -> reclaimed {r}, failed {f}, dropped {d}"
        ));
        if !report.dropped.is_empty() {
            return Err(format!(
                "{name} dropped {d}, but every processing entry has a job behind it"
            ));
        }
        let reported: BTreeSet<&String> = report.reclaimed.iter().chain(&report.failed).collect();
        for &l in &short {
            let job = &self.m.lives[l];
            if job.deadline_by.is_some_and(|d| d < before) && !reported.contains(&job.id) {
                let label = self.label(&self.m.lives[l].id.clone());
                return Err(format!(
                    "{name} left {label}, whose lease ran out before the sweep started"
                ));
            }
        }
        for (ids, buried) in [(&report.reclaimed, false), (&report.failed, true)] {
            for id in ids {
                let label = self.label(id);
                let Some(life) = self.m.cur(id).filter(|l| short.contains(l)) else {
                    return Err(format!(
                        "{name} took back {label}, which holds no lease that can have run out"
                    ));
                };
                let (attempts, max) = (self.m.lives[life].attempts, self.m.max_of(life));
                if (attempts >= max) != buried {
                    return Err(format!(
                        "{name} {} {label} on attempt {attempts} of {max}",
                        if buried { "buried" } else { "requeued" }
                    ));
                }
                tally(if buried {
                    "sweep buried a job"
                } else {
                    "sweep reclaimed a job"
                });
                let token = self.m.lives[life].holder.clone().unwrap_or_default();
                lrem(&mut self.m.processing, id);
                self.m.log(life, Ev::Ended(token, End::LeaseLost));
                if buried {
                    self.m.bury(life);
                } else {
                    let job = &mut self.m.lives[life];
                    job.state = State::Pending;
                    job.holder = None;
                    job.deadline_by = None;
                    self.m.pending.push_front(id.clone());
                    self.m.counters.reclaimed += 1;
                }
            }
        }
        if walk {
            // The full pass also takes completed listings whose hash expired
            // off the history (issue 13: the history stays consistent).
            let mut gone: Vec<String> = self
                .m
                .completed
                .iter()
                .filter(|id| {
                    self.m
                        .cur(id)
                        .is_some_and(|l| self.m.lives[l].hash == Hash::Expired)
                })
                .cloned()
                .collect();
            self.m.completed.retain(|id| !gone.contains(id));
            let mut expired = report.expired.clone();
            expired.sort();
            gone.sort();
            if expired != gone {
                return Err(format!(
                    "{name} took {expired:?} off the completed history; the model expected {gone:?}"
                ));
            }
        }
        Ok(())
    }

    async fn promote(&mut self) -> Step {
        let latest = self
            .m
            .scheduled
            .iter()
            .filter_map(|id| self.m.cur(id).and_then(|l| self.m.lives[l].due_by))
            .max();
        if let Some(latest) = latest {
            wait_until_past(&mut self.raw, latest).await?;
        }
        let waiting: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.q.keys().scheduled())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.raw)
            .await
            .map_err(|e| format!("ZRANGE scheduled: {e}"))?;
        let moved = self
            .q
            .promote_due()
            .await
            .map_err(|e| format!("promote_due: {e}"))?;
        // Due ones move oldest first; ties in member order (ZRANGEBYSCORE).
        let mut due: Vec<(f64, String)> = waiting
            .into_iter()
            .filter(|(id, _)| {
                self.m.scheduled.contains(id)
                    && self
                        .m
                        .cur(id)
                        .is_some_and(|l| self.m.lives[l].due_by.is_some())
            })
            .map(|(id, score)| (score, id))
            .collect();
        due.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut expected = 0;
        let mut went = Vec::new();
        for (_, id) in due {
            self.m.scheduled.remove(&id);
            let life = self.m.cur(&id).expect("a scheduled id has a life");
            let job = &mut self.m.lives[life];
            job.due_by = None;
            if job.hash == Hash::Present && !job.status_missing && job.state == State::Scheduled {
                job.state = State::Pending;
                self.m.pending.push_front(id.clone());
                expected += 1;
                tally("promoted a job");
                went.push(id);
            } else {
                job.state = State::Gone;
            }
        }
        let went = self.labels(&went);
        self.note(format!("promote_due -> {moved}; model: {expected} {went}"));
        if moved != expected {
            return Err(format!(
                "promote_due moved {moved} jobs; the model expected {expected} {went}"
            ));
        }
        Ok(())
    }

    /// Lets a completed job's TTL run out: sets it to 1 ms and waits until
    /// Redis has removed the hash.
    async fn expire_completed(&mut self, sel: Sel) -> Step {
        let candidates: Vec<usize> = self
            .m
            .current
            .values()
            .copied()
            .filter(|&l| {
                let job = &self.m.lives[l];
                job.state == State::Completed
                    && job.hash == Hash::Present
                    && (EXPIRED_COMPLETED_ENTRIES_FIXED || !job.explicit)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if candidates.is_empty() {
            self.note("expire a completed job: none".into());
            return Ok(());
        }
        let life = candidates[sel.of(candidates.len())];
        let id = self.m.lives[life].id.clone();
        let label = self.label(&id);
        self.note(format!("the completed TTL of {label} runs out"));
        let key = self.q.keys().job(&id);
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(1)
            .query_async(&mut self.raw)
            .await
            .map_err(|e| format!("PEXPIRE: {e}"))?;
        let started = Instant::now();
        loop {
            let exists: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut self.raw)
                .await
                .map_err(|e| format!("EXISTS: {e}"))?;
            if !exists {
                break;
            }
            if started.elapsed() > CLOCK_WAIT {
                return Err(format!("{label}'s hash did not expire"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.m.lives[life].hash = Hash::Expired;
        tally("a completed hash expired");
        Ok(())
    }

    /// Every id seen so far, and one never enqueued.
    fn ids_and_unknown(&self) -> Vec<String> {
        let mut ids = self.m.seen.clone();
        ids.push(UNKNOWN_ID.to_owned());
        ids
    }

    async fn delete(&mut self, sel: Sel) -> Step {
        let ids = self.ids_and_unknown();
        let id = ids[sel.of(ids.len())].clone();
        let label = self.label(&id);
        let m = &self.m;
        let listed = [&m.pending, &m.processing, &m.completed, &m.failed]
            .iter()
            .any(|l| l.contains(&id))
            || m.scheduled.contains(&id);
        let expected = m.key_exists(&id) || listed;
        let got = self
            .q
            .delete_job(&id)
            .await
            .map_err(|e| format!("delete_job({label}): {e}"))?;
        self.note(format!("delete_job({label}) -> {got}; model: {expected}"));
        tally(if got {
            "deleted a job"
        } else {
            "delete found nothing"
        });
        if got != expected {
            return Err(format!(
                "delete_job({label}) answered {got}; the model expected {expected}"
            ));
        }
        for list in [
            &mut self.m.pending,
            &mut self.m.processing,
            &mut self.m.completed,
            &mut self.m.failed,
        ] {
            list.retain(|x| *x != id);
        }
        self.m.scheduled.remove(&id);
        if let Some(life) = self.m.cur(&id) {
            let job = &mut self.m.lives[life];
            if matches!(job.hash, Hash::Present | Hash::Missing | Hash::WrongType(_)) {
                job.hash = Hash::Deleted;
            }
            job.state = State::Gone;
            job.deadline_by = None;
            job.due_by = None;
            if let Some(holder) = job.holder.take() {
                self.m.log(life, Ev::Ended(holder, End::Deleted));
            }
        }
        Ok(())
    }

    async fn retry_failed(&mut self, sel: Option<Sel>) -> Step {
        let Some(sel) = sel else {
            let expected: Vec<String> = self
                .m
                .failed
                .iter()
                .rev()
                .filter(|id| self.m.revivable(id))
                .cloned()
                .collect();
            let got = self
                .q
                .retry_all_failed()
                .await
                .map_err(|e| format!("retry_all_failed: {e}"))?;
            let got: Vec<String> = got
                .into_iter()
                .filter(|id| !self.m.corrupt.contains(id))
                .collect();
            let (g, e) = (self.labels(&got), self.labels(&expected));
            self.note(format!("retry_all_failed -> {g}; model: {e}"));
            if got != expected {
                return Err(format!(
                    "retry_all_failed sent back {g}; the model expected {e}"
                ));
            }
            let listed: Vec<String> = self.m.failed.iter().rev().cloned().collect();
            for id in listed {
                if self.m.revivable(&id) {
                    self.m.revive(&id);
                } else {
                    lrem(&mut self.m.failed, &id);
                }
            }
            return Ok(());
        };
        let ids = self.ids_and_unknown();
        let id = ids[sel.of(ids.len())].clone();
        let label = self.label(&id);
        let expected = self.m.revivable(&id);
        let got = self
            .q
            .retry_failed(&id)
            .await
            .map_err(|e| format!("retry_failed({label}): {e}"))?;
        self.note(format!("retry_failed({label}) -> {got}; model: {expected}"));
        if got != expected {
            return Err(format!(
                "retry_failed({label}) answered {got}; the model expected {expected}"
            ));
        }
        if got {
            self.m.revive(&id);
        }
        Ok(())
    }

    async fn garbage(&mut self, target: Sel, what: Garbage) -> Step {
        let candidates: Vec<usize> = self
            .m
            .seen
            .iter()
            .filter_map(|id| self.m.cur(id))
            .filter(|&l| {
                let job = &self.m.lives[l];
                // A claimed job's settles read its status, token and
                // numbers; garbage goes only where they do not look, and into
                // completed_ttl_s, which settle.lua reads and checks.
                let unread_while_held = matches!(
                    what,
                    Garbage::Payload(_)
                        | Garbage::PayloadNotUtf8
                        | Garbage::CompletedTtl(_)
                        | Garbage::DropField(
                            "payload" | "enqueued_at_ms" | "id" | "completed_ttl_s"
                        )
                );
                !job.explicit
                    && job.hash == Hash::Present
                    && match job.state {
                        State::Pending => true,
                        State::Scheduled => what != Garbage::DropField("status"),
                        State::Processing => unread_while_held,
                        _ => false,
                    }
            })
            .collect();
        if candidates.is_empty() {
            self.note(format!("garbage {what:?}: no job to write it into"));
            return Ok(());
        }
        let life = candidates[target.of(candidates.len())];
        let id = self.m.lives[life].id.clone();
        let label = self.label(&id);
        self.note(format!("garbage into {label}: {what:?}"));
        let key = self.q.keys().job(&id);
        let mut cmds = Vec::new();
        match what {
            Garbage::Payload(value) => {
                cmds.push(
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg("payload")
                        .arg(value)
                        .clone(),
                );
            }
            Garbage::PayloadNotUtf8 => {
                cmds.push(
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg("payload")
                        .arg(&b"\xff\xfe{}"[..])
                        .clone(),
                );
            }
            Garbage::DropField(field) => {
                cmds.push(redis::cmd("HDEL").arg(&key).arg(field).clone());
            }
            Garbage::Number(field, value) => {
                cmds.push(redis::cmd("HSET").arg(&key).arg(field).arg(value).clone());
            }
            Garbage::CompletedTtl(value) => {
                cmds.push(
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg("completed_ttl_s")
                        .arg(value)
                        .clone(),
                );
            }
            Garbage::DeleteHash => cmds.push(redis::cmd("DEL").arg(&key).clone()),
            Garbage::WrongType(kind) => {
                cmds.push(redis::cmd("DEL").arg(&key).clone());
                let cmd = match kind {
                    "string" => redis::cmd("SET").arg(&key).arg("garbage").clone(),
                    "list" => redis::cmd("RPUSH").arg(&key).arg("garbage").clone(),
                    "set" => redis::cmd("SADD").arg(&key).arg("garbage").clone(),
                    _ => redis::cmd("ZADD").arg(&key).arg(1).arg("garbage").clone(),
                };
                cmds.push(cmd);
            }
        }
        for cmd in cmds {
            let _: redis::Value = cmd
                .query_async(&mut self.raw)
                .await
                .map_err(|e| format!("garbage {what:?}: {e}"))?;
        }
        tally("garbage written");
        let job = &mut self.m.lives[life];
        if let Garbage::Number("attempts", _) = what {
            job.no_attempts = false;
        }
        match what {
            Garbage::Payload(_) | Garbage::PayloadNotUtf8 | Garbage::DropField("payload") => {
                job.bad_payload = true;
                job.payload_not_utf8 = what == Garbage::PayloadNotUtf8;
            }
            Garbage::DropField("attempts") => {
                job.attempts = 0;
                job.no_attempts = true;
                job.bad_numbers.remove("attempts");
            }
            Garbage::DropField("status") => job.status_missing = true,
            Garbage::DropField("max_attempts") => {
                job.max_field = None;
                job.bad_numbers.remove("max_attempts");
            }
            Garbage::DropField("visibility_ms") => {
                job.vis_ms = millis(LONG_VISIBILITY);
                job.bad_numbers.remove("visibility_ms");
            }
            Garbage::DropField("claim_token") => job.no_claim_token = true,
            Garbage::DropField("completed_ttl_s") => job.ttl_field = None,
            Garbage::DropField(_) => {}
            Garbage::Number(field, value) => match field_number(field, value) {
                None => {
                    job.bad_numbers.insert(field);
                }
                Some(n) => {
                    job.bad_numbers.remove(field);
                    match field {
                        "attempts" => {
                            job.attempts = n;
                            job.no_attempts = false;
                        }
                        "max_attempts" => job.max_field = Some(n),
                        _ => job.vis_ms = n,
                    }
                }
            },
            Garbage::CompletedTtl(value) => job.ttl_field = Some(strict_number(value)),
            Garbage::DeleteHash => job.hash = Hash::Missing,
            Garbage::WrongType(kind) => job.hash = Hash::WrongType(kind),
        }
        Ok(())
    }

    /// The read API against the model: stats, job hashes, the lists.
    async fn read(&mut self) -> Step {
        self.note("read: stats, get_jobs, list".into());
        let stats = self.q.stats().await.map_err(|e| format!("stats: {e}"))?;
        let m = &self.m;
        let c = m.counters;
        let mut problems = Vec::new();
        for (name, got, want) in [
            ("pending_depth", stats.pending_depth, m.pending.len() as u64),
            (
                "processing_depth",
                stats.processing_depth,
                m.processing.len() as u64,
            ),
            (
                "completed_depth",
                stats.completed_depth,
                m.completed.len() as u64,
            ),
            (
                "scheduled_depth",
                stats.scheduled_depth,
                m.scheduled.len() as u64,
            ),
            ("enqueued_total", stats.enqueued_total, c.enqueued),
            ("completed_total", stats.completed_total, c.completed),
            ("reclaimed_total", stats.reclaimed_total, c.reclaimed),
            ("retried_total", stats.retried_total, c.retried),
            ("revived_total", stats.revived_total, c.revived),
        ] {
            if got != want {
                problems.push(format!("stats: {name} is {got}, the model says {want}"));
            }
        }
        let failed_depth = m.failed.len() as u64;
        if !(failed_depth..=failed_depth + m.corrupt.len() as u64).contains(&stats.failed_depth) {
            problems.push(format!(
                "stats: failed_depth is {}, the model says {failed_depth}",
                stats.failed_depth
            ));
        }
        if !(c.failed..=c.failed + m.failed_slack).contains(&stats.failed_total) {
            problems.push(format!(
                "stats: failed_total is {}, the model says {}",
                stats.failed_total, c.failed
            ));
        }
        if stats.paused != m.paused {
            problems.push(format!("stats: paused is {}", stats.paused));
        }
        let ids: Vec<String> = self
            .ids_and_unknown()
            .into_iter()
            .filter(|id| {
                let Some(job) = self.m.cur(id).map(|l| &self.m.lives[l]) else {
                    return true;
                };
                let wrong_type = matches!(job.hash, Hash::WrongType(_));
                let not_utf8 = job.hash == Hash::Present && job.payload_not_utf8;
                (WRONG_TYPE_AT_JOB_KEY_FIXED || !wrong_type) && (NON_UTF8_READS_FIXED || !not_utf8)
            })
            .collect();
        let records = self
            .q
            .get_jobs(&ids)
            .await
            .map_err(|e| format!("get_jobs: {e}"))?;
        for (id, record) in ids.iter().zip(records) {
            let job = self.m.cur(id).map(|l| &self.m.lives[l]);
            let present = job.is_some_and(|j| j.hash == Hash::Present);
            match (present, record) {
                (false, None) => {}
                (false, Some(_)) => {
                    problems.push(format!("get_jobs: {id} has a record, the model has no job"))
                }
                (true, None) => problems.push(format!("get_jobs: {id} has no record")),
                (true, Some(record)) => {
                    let job = job.expect("present");
                    if !job.status_missing && record.status() != job_status(job.state) {
                        problems.push(format!(
                            "get_jobs: {id} has status {:?}, the model says {:?}",
                            record.status(),
                            job.state
                        ));
                    }
                    if !job.bad_numbers.contains("attempts")
                        && record.attempts().ok() != u32::try_from(job.attempts).ok()
                    {
                        problems.push(format!(
                            "get_jobs: {id} has attempts {:?}, the model says {}",
                            record.attempts(),
                            job.attempts
                        ));
                    }
                }
            }
        }
        let m = &self.m;
        let corrupt = |ids: Vec<String>| -> Vec<String> {
            ids.into_iter()
                .filter(|id| !m.corrupt.contains(id))
                .collect()
        };
        for status in JobStatus::ALL {
            let got = self
                .q
                .list(status, 0..1000)
                .await
                .map_err(|e| format!("list({status}): {e}"))?;
            let want: Vec<String> = match status {
                JobStatus::Pending => m.pending.iter().rev().cloned().collect(),
                JobStatus::Processing => m.processing.iter().cloned().collect(),
                JobStatus::Completed => m.completed.iter().cloned().collect(),
                JobStatus::Failed => m.failed.iter().cloned().collect(),
                JobStatus::Scheduled => m.scheduled.iter().cloned().collect(),
                // The model has no cancel, snooze or expiry steps (controls.rs
                // tests those): nothing ever ends up cancelled here.
                _ => Vec::new(),
            };
            let got = if status == JobStatus::Scheduled {
                let mut got = got;
                got.sort();
                got
            } else {
                corrupt(got)
            };
            if got != want {
                problems.push(format!(
                    "list({status}) is {got:?}, the model says {want:?}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

impl Model {
    /// True when `retry_failed` sends the job back: a dead letter's hash.
    fn revivable(&self, id: &str) -> bool {
        self.cur(id).is_some_and(|l| {
            let job = &self.lives[l];
            job.hash == Hash::Present && job.state == State::Failed && !job.status_missing
        })
    }

    /// `retry.lua`'s revive.
    fn revive(&mut self, id: &str) {
        let life = self.cur(id).expect("a revivable job has a life");
        self.failed.retain(|x| x != id);
        let job = &mut self.lives[life];
        job.state = State::Pending;
        job.attempts = 0;
        job.no_attempts = false;
        job.bad_numbers.remove("attempts");
        job.holder = None;
        job.no_claim_token = false;
        self.pending.push_front(id.to_owned());
        self.counters.revived += 1;
        self.log(life, Ev::Revived);
        tally("dead letter sent back");
    }

    /// Applies a settle that held the job.
    fn apply_settle(&mut self, claim: &Claim, how: Settle, ack: Ack, now_by: u64) {
        let life = claim.life;
        let id = self.lives[life].id.clone();
        let token = claim.job.token().to_owned();
        lrem(&mut self.processing, &id);
        {
            let job = &mut self.lives[life];
            job.holder = None;
            job.deadline_by = None;
            job.settled = Settled::Token(token.clone());
            job.settled_tokens.insert(token.clone());
        }
        let end = match ack {
            Ack::Completed => {
                self.lives[life].state = State::Completed;
                self.counters.completed += 1;
                self.push_history(true, &id);
                End::Completed
            }
            Ack::Retrying => {
                self.counters.retried += 1;
                let job = &mut self.lives[life];
                match how {
                    Settle::Fail(FailHow::RetryAfter(ms)) => {
                        job.state = State::Scheduled;
                        job.due_by = Some(now_by + ms);
                        self.scheduled.insert(id);
                    }
                    Settle::Fail(FailHow::RetryAfterLong) => {
                        job.state = State::Scheduled;
                        self.scheduled.insert(id);
                    }
                    _ => {
                        job.state = State::Pending;
                        self.pending.push_front(id);
                    }
                }
                End::Retrying
            }
            Ack::Failed => {
                self.bury(life);
                End::Failed
            }
            _ => {
                let job = &mut self.lives[life];
                job.attempts = job.attempts.saturating_sub(1);
                job.no_attempts = false;
                job.state = State::Pending;
                self.pending.push_back(id);
                End::Released
            }
        };
        self.log(life, Ev::Ended(token, end));
    }
}

/// What Redis holds for one queue, read directly.
type Lists = (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<(String, f64)>,
    Vec<(String, f64)>,
    HashMap<String, String>,
    bool,
    Vec<String>,
);

impl World {
    /// Reads Redis directly and checks the invariants, then the model.
    async fn check(&mut self) -> Step {
        let keys = self.q.keys().clone();
        let (pending, processing, completed, failed, scheduled, leases, stats, paused, all_keys): Lists =
            redis::pipe()
                .cmd("LRANGE")
                .arg(keys.pending())
                .arg(0)
                .arg(-1)
                .cmd("LRANGE")
                .arg(keys.processing())
                .arg(0)
                .arg(-1)
                .cmd("LRANGE")
                .arg(keys.completed())
                .arg(0)
                .arg(-1)
                .cmd("LRANGE")
                .arg(keys.failed())
                .arg(0)
                .arg(-1)
                .cmd("ZRANGE")
                .arg(keys.scheduled())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .cmd("ZRANGE")
                .arg(keys.leases())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .cmd("HGETALL")
                .arg(keys.stats())
                .cmd("EXISTS")
                .arg(keys.paused())
                .cmd("KEYS")
                .arg(keys.pattern())
                .query_async(&mut self.raw)
                .await
                .map_err(|e| format!("reading the queue: {e}"))?;
        let prefix = keys.job_prefix();
        let scheduled: Vec<String> = scheduled.into_iter().map(|(id, _)| id).collect();
        let leases: Vec<String> = leases.into_iter().map(|(member, _)| member).collect();
        let mut ids: BTreeSet<String> = all_keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        ids.extend(self.m.seen.iter().cloned());
        for list in [&pending, &processing, &completed, &failed, &scheduled] {
            ids.extend(list.iter().cloned());
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let mut types: HashMap<String, String> = HashMap::new();
        let mut hashes: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut ttls: HashMap<String, i64> = HashMap::new();
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("TYPE").arg(keys.job(id));
            }
            let found: Vec<String> = pipe
                .query_async(&mut self.raw)
                .await
                .map_err(|e| format!("TYPE: {e}"))?;
            types = ids.iter().cloned().zip(found).collect();
            let hash_ids: Vec<&String> = ids.iter().filter(|id| types[*id] == "hash").collect();
            if !hash_ids.is_empty() {
                let mut pipe = redis::pipe();
                for id in &hash_ids {
                    pipe.cmd("HGETALL").arg(keys.job(id));
                    pipe.cmd("PTTL").arg(keys.job(id));
                }
                let found: Vec<(HashMap<String, Vec<u8>>, i64)> = pipe
                    .query_async(&mut self.raw)
                    .await
                    .map_err(|e| format!("HGETALL: {e}"))?;
                for (id, (fields, ttl)) in hash_ids.into_iter().zip(found) {
                    ttls.insert(id.clone(), ttl);
                    let fields = fields
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                        .collect();
                    hashes.insert(id.clone(), fields);
                }
            }
        }
        let mut problems = Vec::new();
        let named: Vec<(&str, &Vec<String>)> = vec![
            ("pending", &pending),
            ("processing", &processing),
            ("completed", &completed),
            ("failed", &failed),
            ("scheduled", &scheduled),
        ];

        // Every id is in at most one list, once.
        let mut places: HashMap<&str, Vec<&str>> = HashMap::new();
        for (name, list) in &named {
            for id in list.iter() {
                places.entry(id.as_str()).or_default().push(name);
            }
        }
        for (id, at) in &places {
            if at.len() > 1 {
                let label = self.label(id);
                problems.push(format!("{label} is listed {at:?}: more than one state"));
            }
        }
        // A listed id's hash names that list, unless garbage removed it.
        for (id, at) in &places {
            let label = self.label(id);
            let job = self.m.cur(id).map(|l| &self.m.lives[l]);
            let place = at[0];
            match hashes.get(*id) {
                Some(h) => match h.get("status") {
                    Some(s) if s == place => {}
                    None if job.is_some_and(|j| j.status_missing) => {}
                    other => problems.push(format!(
                        "{label} is listed in {place} but its hash says status {other:?}"
                    )),
                },
                None => {
                    let garbage = job.is_some_and(|j| {
                        matches!(j.hash, Hash::Missing | Hash::WrongType(_))
                            && matches!(place, "pending" | "scheduled")
                            || j.hash == Hash::Expired && place == "completed"
                    });
                    if !garbage {
                        problems.push(format!(
                            "{label} is listed in {place} but its key is {}",
                            types.get(*id).map_or("unread", String::as_str)
                        ));
                    }
                }
            }
        }
        // Every hash is listed where its status says, with a token exactly
        // while processing, a lease for that token, and a reason when failed.
        let lease_set: BTreeSet<&str> = leases.iter().map(String::as_str).collect();
        for (id, h) in &hashes {
            let label = self.label(id);
            let job = self.m.cur(id).map(|l| &self.m.lives[l]);
            let status = h.get("status").map(String::as_str);
            let listed = places.get(id.as_str()).cloned().unwrap_or_default();
            match status {
                Some(s @ ("pending" | "processing" | "completed" | "failed" | "scheduled")) => {
                    if !listed.contains(&s) {
                        let what = match s {
                            "failed" => "a dead letter that lost its listing",
                            "completed" => "a completed job missing from the history",
                            _ => "a job in no list",
                        };
                        problems.push(format!(
                            "{label} has status {s} but is listed {listed:?}: {what}"
                        ));
                    }
                }
                None if job.is_some_and(|j| j.status_missing) => {}
                other => problems.push(format!("{label} has status {other:?}")),
            }
            let token = h.get("claim_token").map_or("", String::as_str);
            if (status == Some("processing")) == token.is_empty() {
                problems.push(format!(
                    "{label} has status {status:?} and claim_token {token:?}"
                ));
            }
            if status == Some("processing") && !lease_set.contains(format!("{id}:{token}").as_str())
            {
                problems.push(format!(
                    "{label} is processing without a lease for its claim"
                ));
            }
            if status == Some("failed") && h.get("last_error").is_none_or(|e| e.is_empty()) {
                problems.push(format!("{label} failed without a reason"));
            }
        }
        for member in &leases {
            let ok = member.rsplit_once(':').is_some_and(|(id, token)| {
                hashes.get(id).is_some_and(|h| {
                    h.get("status").map(String::as_str) == Some("processing")
                        && h.get("claim_token").map(String::as_str) == Some(token)
                })
            });
            if !ok {
                problems.push(format!("lease {member} names no live claim"));
            }
        }
        // Only the queue's own keys.
        let own = [
            keys.pending(),
            keys.processing(),
            keys.completed(),
            keys.failed(),
            keys.scheduled(),
            keys.leases(),
            keys.stats(),
            keys.paused(),
            // Ended claims, kept so a repeated settle answers Duplicate.
            keys.settled(),
        ];
        let request_prefix = keys.request("");
        for key in &all_keys {
            if !own.contains(key) && !key.starts_with(&prefix) && !key.starts_with(&request_prefix)
            {
                problems.push(format!("unexpected key {key}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }

        // Now the model: the lists, the leases, the counters, each job.
        let m = &self.m;
        let not_corrupt = |list: &Vec<String>| -> Vec<String> {
            list.iter()
                .filter(|id| !m.corrupt.contains(*id))
                .cloned()
                .collect()
        };
        let model_scheduled: Vec<String> = m.scheduled.iter().cloned().collect();
        let mut scheduled_sorted = scheduled.clone();
        scheduled_sorted.sort();
        for (name, got, want) in [
            ("pending", pending.clone(), Vec::from(m.pending.clone())),
            (
                "processing",
                processing.clone(),
                Vec::from(m.processing.clone()),
            ),
            (
                "completed",
                not_corrupt(&completed),
                Vec::from(m.completed.clone()),
            ),
            ("failed", not_corrupt(&failed), Vec::from(m.failed.clone())),
            ("scheduled", scheduled_sorted, model_scheduled),
        ] {
            if got != want {
                let (g, w) = (self.labels(&got), self.labels(&want));
                problems.push(format!("{name} is {g}; the model says {w}"));
            }
        }
        let m = &self.m;
        let mut want_leases: Vec<String> = m
            .current
            .values()
            .filter_map(|&l| {
                let job = &m.lives[l];
                job.holder.as_ref().map(|t| format!("{}:{t}", job.id))
            })
            .collect();
        want_leases.sort();
        let mut got_leases = leases.clone();
        got_leases.sort();
        if got_leases != want_leases {
            problems.push(format!(
                "leases are {got_leases:?}; the model says {want_leases:?}"
            ));
        }
        let c = m.counters;
        for (name, want) in [
            ("enqueued_total", c.enqueued),
            ("completed_total", c.completed),
            ("reclaimed_total", c.reclaimed),
            ("retried_total", c.retried),
            ("revived_total", c.revived),
            ("failed_total", c.failed),
        ] {
            let got: u64 = match stats.get(name) {
                None => 0,
                Some(v) => match v.parse() {
                    Ok(n) => n,
                    Err(_) => {
                        problems.push(format!("stats {name} is {v:?}"));
                        continue;
                    }
                },
            };
            let slack = if name == "failed_total" {
                m.failed_slack
            } else {
                0
            };
            if !(want..=want + slack).contains(&got) {
                problems.push(format!("stats {name} is {got}; the model counted {want}"));
            }
        }
        if paused != m.paused {
            problems.push(format!("paused is {paused}; the model says {}", m.paused));
        }
        for id in &ids {
            let Some(life) = m.cur(id) else {
                if types.get(id).is_some_and(|t| t != "none") {
                    problems.push(format!("a key for {id}, which was never enqueued"));
                }
                continue;
            };
            let job = &m.lives[life];
            let ty = types.get(id).map_or("none", String::as_str);
            let label = self.labels.get(id).cloned().unwrap_or_else(|| id.clone());
            match &job.hash {
                Hash::Present => {
                    let Some(h) = hashes.get(id) else {
                        problems.push(format!(
                            "{label}'s hash is gone ({ty}); the model has it {:?}",
                            job.state
                        ));
                        continue;
                    };
                    if !job.status_missing
                        && h.get("status").map(String::as_str) != Some(job.state.status())
                    {
                        problems.push(format!(
                            "{label} has status {:?}; the model says {:?}",
                            h.get("status"),
                            job.state
                        ));
                    }
                    let attempts = h.get("attempts").map(String::as_str);
                    let attempts_ok = if job.no_attempts {
                        attempts.is_none()
                    } else {
                        attempts == Some(&job.attempts.to_string())
                    };
                    if !job.bad_numbers.contains("attempts") && !attempts_ok {
                        problems.push(format!(
                            "{label} has attempts {:?}; the model counts {}",
                            h.get("attempts"),
                            job.attempts
                        ));
                    }
                    let token = h.get("claim_token").map(String::as_str);
                    let token_ok = match (&job.holder, token) {
                        (Some(t), Some(got)) => t == got,
                        (None, Some(got)) => got.is_empty(),
                        (None, None) => job.no_claim_token,
                        (Some(_), None) => false,
                    };
                    if !token_ok {
                        problems.push(format!(
                            "{label} has claim_token {token:?}; the model's holder is {:?}",
                            job.holder
                        ));
                    }
                    let ttl = ttls.get(id).copied().unwrap_or(-2);
                    let want_ttl = match job.state {
                        State::Completed => job.completed_ttl(m.opts.completed_ttl),
                        _ => 0,
                    };
                    let ttl_ok = if want_ttl == 0 {
                        ttl == -1
                    } else {
                        ttl > 0 && ttl <= i64::try_from(want_ttl * 1000).unwrap_or(i64::MAX)
                    };
                    if !ttl_ok {
                        problems.push(format!(
                            "{label} ({:?}) expires in {ttl} ms; the model says {}",
                            job.state,
                            if want_ttl == 0 {
                                "never".to_owned()
                            } else {
                                format!("within {want_ttl} s")
                            }
                        ));
                    }
                    let settled = h.get("settled_token");
                    let settled_ok = match &job.settled {
                        Settled::Never => settled.is_none(),
                        Settled::Token(t) => settled == Some(t),
                        Settled::Unknown => settled.is_some_and(|s| !s.is_empty()),
                    };
                    if !settled_ok {
                        problems.push(format!(
                            "{label} has settled_token {settled:?}; the model says {:?}",
                            job.settled
                        ));
                    }
                }
                Hash::WrongType(kind) => {
                    if ty != *kind && ty != "none" && ty != "hash" {
                        problems.push(format!("{label}'s key is a {ty}; garbage made it a {kind}"));
                    }
                }
                gone => {
                    if ty != "none" {
                        problems.push(format!(
                            "{label}'s key is a {ty}; the model has it {gone:?} in state {:?}",
                            job.state
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

// ---------------------------------------------------------------------------
// The test

async fn run_case(
    conn: &Connection,
    mut raw: MultiplexedConnection,
    opts: CaseOptions,
    ops: &[Op],
) -> Result<(), String> {
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut raw)
        .await
        .map_err(|e| format!("FLUSHDB: {e}"))?;
    let options = QueueOptions::new()
        .visibility(LONG_VISIBILITY)
        .max_attempts(opts.max_attempts)
        .completed_ttl(Duration::from_secs(opts.completed_ttl))
        .completed_history(opts.completed_history)
        .failed_history(opts.failed_history);
    let q = Queue::new_with(conn, &unique_key("ilv"), options).map_err(|e| e.to_string())?;
    let mut world = World {
        q,
        raw,
        m: Model::new(opts),
        trace: Vec::new(),
        labels: HashMap::new(),
        next_token: 0,
        next_replay: 0,
    };
    for (step, op) in ops.iter().enumerate() {
        world.m.step = step;
        let outcome = match world.apply(op).await {
            Ok(()) => world.check().await,
            // What the failed call left behind, against the model's state
            // before it (a script that fails should have written nothing).
            Err(e) => Err(match world.check().await {
                Ok(()) => format!("{e}\n(and it left Redis as it was)"),
                Err(left) => format!("{e}\nand it left behind:\n{left}"),
            }),
        };
        if let Err(problem) = outcome {
            if !world
                .trace
                .last()
                .is_some_and(|line| line.starts_with(&format!("{step:>4}:")))
            {
                world.note(format!("{op:?}"));
            }
            return Err(format!(
                "step {step} broke an invariant:\n{problem}\n\nthe steps, as run ({opts:?}):\n{}",
                world.trace.join("\n")
            ));
        }
    }
    if std::env::var_os("INTERLEAVINGS_TRACE").is_some() {
        eprintln!("---- case {opts:?}\n{}", world.trace.join("\n"));
    }
    Ok(())
}

/// A seed for this run: `PROPTEST_RNG_SEED` when set, else a fresh one.
fn seed(config: &Config) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        // std's hasher keys are random per process.
        RngSeed::Random => std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
    }
}

/// The first problem of a failure, with ids, labels and numbers blanked:
/// what "the same invariant breaks" means while minimizing.
fn kind_of(reason: &str) -> String {
    let first = reason.lines().nth(1).unwrap_or_default();
    let mut out = String::new();
    let mut blank = false;
    for word in first.split(|c: char| !c.is_alphanumeric() && c != '_') {
        let id_like = word.starts_with(['j', 'p', 'r', 'c'])
            && word.len() > 1
            && word[1..].bytes().all(|b| b.is_ascii_digit());
        if word.bytes().any(|b| b.is_ascii_digit()) || id_like {
            blank = true;
        } else if !word.is_empty() {
            if blank {
                out.push_str("# ");
                blank = false;
            }
            out.push_str(word);
            out.push(' ');
        }
    }
    out
}

/// Deletes steps, in as many passes as it takes, while the same invariant
/// still breaks; returns the shorter case and its failure.
fn minimize(
    run: impl Fn(&[Op]) -> Result<(), String>,
    mut ops: Vec<Op>,
    mut reason: String,
) -> (Vec<Op>, String) {
    let kind = kind_of(&reason);
    loop {
        let mut progressed = false;
        let mut i = 0;
        while i < ops.len() {
            let mut fewer = ops.clone();
            fewer.remove(i);
            match run(&fewer) {
                Err(again) if kind_of(&again) == kind => {
                    ops = fewer;
                    reason = again;
                    progressed = true;
                }
                _ => i += 1,
            }
        }
        if !progressed {
            return (ops, reason);
        }
    }
}

#[test]
fn random_interleavings_keep_every_job_in_exactly_one_state() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let (conn, raw) = rt.block_on(async {
        let conn = Connection::connect(server.url().as_str()).await.unwrap();
        (conn, server.conn().await)
    });
    let mut config = Config {
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    let seed = seed(&config);
    config.rng_seed = RngSeed::Fixed(seed);
    let cases = config.cases;
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(
        &(case_options(), prop::collection::vec(op(), 1..=MAX_OPS)),
        |(opts, ops)| {
            rt.block_on(run_case(&conn, raw.clone(), opts, &ops))
                .map_err(TestCaseError::fail)
        },
    );
    match result {
        Ok(()) => eprintln!(
            "interleavings: {cases} cases of up to {MAX_OPS} steps passed in {:?} \
             (PROPTEST_RNG_SEED={seed}); outcomes: {:?}",
            started.elapsed(),
            TALLY.lock().unwrap()
        ),
        Err(TestError::Fail(reason, (opts, ops))) => {
            // proptest deletes steps in one pass; delete more while the same
            // invariant still breaks.
            let run = |ops: &[Op]| rt.block_on(run_case(&conn, raw.clone(), opts, ops));
            let (ops, reason) = minimize(run, ops, reason.message().to_owned());
            panic!(
                "{reason}\n\nshrunk input: {opts:?}\n{ops:#?}\n\nreproduce with PROPTEST_RNG_SEED={seed}"
            )
        }
        Err(e) => panic!("{e} (PROPTEST_RNG_SEED={seed})"),
    }
}
