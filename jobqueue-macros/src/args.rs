//! Parsing and validation of `#[job(...)]` arguments.

use std::collections::HashSet;
use std::time::Duration;

use proc_macro2::{Span, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitInt, LitStr, Path, Token};

use crate::duration::{BackoffArg, duration_arg, parse_backoff};

/// The keys `#[job]` accepts, in the order the docs list them.
const KEYS: &[&str] = &[
    "queue",
    "max_attempts",
    "visibility",
    "timeout",
    "backoff",
    "expires",
    "unique_for",
    "unique_mode",
    "cron",
    "tz",
    "misfire",
    "priority",
    "rate",
    "burst",
    "max_running",
    "rate_key",
    "name",
    "crate",
];

/// `#[job(...)]`'s arguments, validated.
#[derive(Default)]
#[allow(missing_debug_implementations)]
pub(crate) struct JobArgs {
    pub(crate) queue: Option<String>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) visibility_ms: Option<u64>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) expires_ms: Option<u64>,
    pub(crate) unique_for_ms: Option<u64>,
    pub(crate) unique_mode: Option<(String, Span)>,
    pub(crate) cron: Option<(String, Span)>,
    pub(crate) tz: Option<(String, Span)>,
    pub(crate) misfire_skip: Option<(bool, Span)>,
    pub(crate) backoff: Option<BackoffArg>,
    pub(crate) priority: Option<i8>,
    /// Jobs per period and the period in ms.
    pub(crate) rate: Option<(u32, u64)>,
    pub(crate) burst: Option<(u32, Span)>,
    pub(crate) max_running: Option<u32>,
    pub(crate) rate_key: Option<syn::Expr>,
    pub(crate) name: Option<String>,
    pub(crate) krate: Option<Path>,
}

/// `#[job(...)]`'s arguments as far as they are valid, and the errors of
/// the others.
///
/// Parsing goes on past a bad argument, from the next comma, so one build
/// reports every mistake in the attribute, and the valid arguments still
/// shape the job type generated beside the errors (`crate`, for one, which
/// the type's paths need to resolve).
#[allow(missing_debug_implementations)]
pub(crate) struct ParsedArgs {
    pub(crate) args: JobArgs,
    /// Every error, combined; `None` when all arguments are valid.
    pub(crate) error: Option<syn::Error>,
}

impl Parse for ParsedArgs {
    /// Never fails: the errors are in [`ParsedArgs::error`].
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = JobArgs::default();
        let mut error = None;
        // Keys given, valid or not: a key whose value is wrong has its own
        // error, so the keys that need it do not add "needs ..." to it.
        let mut seen: HashSet<String> = HashSet::new();
        while !input.is_empty() {
            if let Err(e) = parse_argument(input, &mut args, &mut seen) {
                add_error(&mut error, e);
                skip_to_comma(input);
            }
            if input.is_empty() {
                break;
            }
            if let Err(e) = input.parse::<Token![,]>() {
                add_error(&mut error, e);
                skip_to_comma(input);
                let _ = input.parse::<Option<Token![,]>>();
            }
        }
        if let (Some((_, span)), false) = (&args.tz, seen.contains("cron")) {
            let e = syn::Error::new(
                *span,
                "tz needs cron (the zone the cron expression is read in)",
            );
            add_error(&mut error, e);
        }
        if let (Some((_, span)), false) = (&args.misfire_skip, seen.contains("cron")) {
            add_error(&mut error, syn::Error::new(*span, "misfire needs cron"));
        }
        if let (Some((_, span)), false) = (&args.burst, seen.contains("rate")) {
            let e = syn::Error::new(
                *span,
                "burst needs rate (how many jobs may start at once under it)",
            );
            add_error(&mut error, e);
        }
        if let (Some((_, span)), false) = (&args.unique_mode, seen.contains("unique_for")) {
            let e = syn::Error::new(
                *span,
                "unique_mode needs unique_for (how long the lock may live at most)",
            );
            add_error(&mut error, e);
        }
        Ok(Self { args, error })
    }
}

fn add_error(all: &mut Option<syn::Error>, e: syn::Error) {
    match all {
        Some(all) => all.combine(e),
        None => *all = Some(e),
    }
}

/// Moves past what is left of a bad argument: up to the next top-level
/// comma or the end (a comma inside `()`, `[]` or `{}`, as in a
/// `rate_key` closure's tuple, is inside one token tree and not seen here).
fn skip_to_comma(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            if matches!(&tree, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    });
}

/// Parses one `key = value` into `args`, checking the value on its own.
fn parse_argument(
    input: ParseStream<'_>,
    args: &mut JobArgs,
    seen: &mut HashSet<String>,
) -> syn::Result<()> {
    // `crate` is a keyword: accept it as a key like any identifier.
    let key = input.call(Ident::parse_any)?;
    let name = key.to_string();
    let unknown = || {
        syn::Error::new(
            key.span(),
            format!(
                "unknown argument `{name}`; expected one of: {}",
                KEYS.join(", ")
            ),
        )
    };
    if !KEYS.contains(&name.as_str()) {
        return Err(unknown());
    }
    if !seen.insert(name.clone()) {
        return Err(syn::Error::new(
            key.span(),
            format!("duplicate argument `{name}`"),
        ));
    }
    input.parse::<Token![=]>()?;
    match name.as_str() {
        "queue" => {
            let lit: LitStr = input.parse()?;
            args.queue = Some(checked_name(&lit, "queue")?);
        }
        "name" => {
            let lit: LitStr = input.parse()?;
            args.name = Some(checked_name(&lit, "name")?);
        }
        "max_attempts" => {
            let lit: LitInt = input.parse()?;
            let n: u32 = lit.base10_parse()?;
            jobqueue_rules::check_max_attempts(n)
                .map_err(|reason| syn::Error::new(lit.span(), format!("max_attempts {reason}")))?;
            args.max_attempts = Some(n);
        }
        "visibility" => {
            let (ms, span) = duration_arg(input)?;
            jobqueue_rules::check_visibility(Duration::from_millis(ms))
                .map_err(|reason| syn::Error::new(span, format!("invalid visibility: {reason}")))?;
            args.visibility_ms = Some(ms);
        }
        "timeout" => {
            let (ms, span) = duration_arg(input)?;
            if ms == 0 {
                return Err(syn::Error::new(span, "timeout must be longer than 0 ms"));
            }
            args.timeout_ms = Some(ms);
        }
        "expires" => {
            let (ms, span) = duration_arg(input)?;
            if ms == 0 || ms > jobqueue_rules::MAX_DURATION.as_millis() as u64 {
                return Err(syn::Error::new(
                    span,
                    "expires must be longer than 0 ms and at most a year",
                ));
            }
            args.expires_ms = Some(ms);
        }
        "unique_for" => {
            let (ms, span) = duration_arg(input)?;
            if ms == 0 || ms > jobqueue_rules::MAX_DURATION.as_millis() as u64 {
                return Err(syn::Error::new(
                    span,
                    "unique_for must be longer than 0 ms and at most a year",
                ));
            }
            args.unique_for_ms = Some(ms);
        }
        "cron" => {
            let lit: LitStr = input.parse()?;
            let cron = lit.value();
            jobqueue_rules::check_cron(&cron, "UTC")
                .map_err(|reason| syn::Error::new(lit.span(), reason))?;
            args.cron = Some((cron, lit.span()));
        }
        "tz" => {
            let lit: LitStr = input.parse()?;
            let zone = lit.value();
            // The zone on its own, with an expression known to be valid: a
            // bad `cron` has its own error.
            jobqueue_rules::check_cron("* * * * *", &zone)
                .map_err(|reason| syn::Error::new(lit.span(), reason))?;
            args.tz = Some((zone, lit.span()));
        }
        "misfire" => {
            let lit: LitStr = input.parse()?;
            let skip = match lit.value().as_str() {
                "run_once" => false,
                "skip" => true,
                other => {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!("unknown misfire {other:?}: expected \"run_once\" or \"skip\""),
                    ));
                }
            };
            args.misfire_skip = Some((skip, lit.span()));
        }
        "unique_mode" => {
            let lit: LitStr = input.parse()?;
            let mode = lit.value();
            if !["while_pending", "until_completed", "window"].contains(&mode.as_str()) {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "unknown unique_mode {mode:?}: expected \"while_pending\", \"until_completed\" or \"window\""
                    ),
                ));
            }
            args.unique_mode = Some((mode, lit.span()));
        }
        "backoff" => {
            let lit: LitStr = input.parse()?;
            args.backoff =
                Some(parse_backoff(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?);
        }
        "crate" => {
            let lit: LitStr = input.parse()?;
            args.krate = Some(lit.parse()?);
        }
        "priority" => {
            let negative = input.parse::<Option<Token![-]>>()?.is_some();
            let lit: LitInt = input.parse()?;
            let n: i64 = lit.base10_parse()?;
            let n = if negative { -n } else { n };
            if !(-3..=3).contains(&n) {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "priority {n} is not from -3 to 3 (higher runs first; 0 is the default)"
                    ),
                ));
            }
            args.priority = Some(n as i8);
        }
        "rate" => {
            let lit: LitStr = input.parse()?;
            args.rate = Some(
                jobqueue_rules::parse_rate(&lit.value())
                    .map_err(|e| syn::Error::new(lit.span(), e))?,
            );
        }
        "burst" | "max_running" => {
            let lit: LitInt = input.parse()?;
            let n: u32 = lit.base10_parse()?;
            if n == 0 || n > jobqueue_rules::MAX_RATE_COUNT {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("{name} must be 1 to {}", jobqueue_rules::MAX_RATE_COUNT),
                ));
            }
            if name == "burst" {
                args.burst = Some((n, lit.span()));
            } else {
                args.max_running = Some(n);
            }
        }
        "rate_key" => {
            args.rate_key = Some(input.parse()?);
        }
        _ => return Err(unknown()),
    }
    Ok(())
}

/// Checks a queue or job name with the runtime's own rule
/// ([`jobqueue_rules::check_name`]): it becomes part of Redis key names and
/// must not break the layout or a `SCAN` pattern.
fn checked_name(lit: &LitStr, what: &str) -> syn::Result<String> {
    let value = lit.value();
    jobqueue_rules::check_name(&value).map_err(|reason| {
        syn::Error::new(lit.span(), format!("invalid {what} {value:?}: {reason}"))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: &str) -> syn::Result<JobArgs> {
        let parsed: ParsedArgs = syn::parse_str(tokens)?;
        match parsed.error {
            Some(error) => Err(error),
            None => Ok(parsed.args),
        }
    }

    /// Every error's message, in order.
    fn messages(tokens: &str) -> Vec<String> {
        let parsed: ParsedArgs = syn::parse_str(tokens).expect("parsing never fails as a whole");
        parsed
            .error
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_key_parses() {
        let args = parse(r#"queue = "email", max_attempts = 5, visibility = "2m", timeout = 30000, expires = "1h", name = "welcome", crate = "::my::jq""#).unwrap();
        assert_eq!(args.queue.as_deref(), Some("email"));
        assert_eq!(args.max_attempts, Some(5));
        assert_eq!(args.visibility_ms, Some(120_000));
        assert_eq!(args.timeout_ms, Some(30_000));
        assert_eq!(args.expires_ms, Some(3_600_000));
        let unique = parse(r#"unique_for = "10m", unique_mode = "until_completed""#).unwrap();
        assert_eq!(unique.unique_for_ms, Some(600_000));
        assert_eq!(unique.unique_mode.unwrap().0, "until_completed");
        assert_eq!(args.name.unwrap(), "welcome");
        assert!(args.krate.is_some());
        assert!(parse("").unwrap().queue.is_none());
        assert!(parse(r#"queue = "a","#).is_ok(), "a trailing comma is fine");
    }

    #[test]
    fn misuse_gives_a_message_that_says_what_to_do() {
        let msg = |t: &str| parse(t).err().expect("an error").to_string();
        assert!(msg("retries = 3").contains("expected one of: queue, max_attempts"));
        assert!(
            msg("max_attempts = 1, max_attempts = 2").contains("duplicate argument `max_attempts`")
        );
        assert!(msg("max_attempts = 0").contains("at least 1"));
        assert!(msg(r#"visibility = "50ms""#).contains("under the 100 ms minimum"));
        assert!(msg(r#"visibility = "soon""#).contains("invalid duration"));
        assert!(msg(r#"queue = "a b""#).contains("invalid queue"));
        assert!(msg(r#"name = "x{y}""#).contains("invalid name"));
        assert!(msg("timeout = 0").contains("longer than 0"));
        assert!(msg(r#"expires = "0s""#).contains("longer than 0 ms and at most a year"));
        assert!(msg(r#"expires = "9000h""#).contains("at most a year"));
        assert!(msg(r#"unique_mode = "window""#).contains("needs unique_for"));
        assert!(msg(r#"cron = "61 * * * *""#).contains("invalid cron expression"));
        assert!(msg(r#"cron = "* * * * *", tz = "Mars/Base""#).contains("unknown time zone"));
        assert!(msg(r#"tz = "UTC""#).contains("tz needs cron"));
        assert!(msg(r#"cron = "* * * * *", misfire = "late""#).contains("unknown misfire"));
        assert!(msg(r#"misfire = "skip""#).contains("misfire needs cron"));
        assert!(parse(r#"cron = "0 */5 * * * *", tz = "Europe/Berlin""#).is_ok());
        assert!(
            msg(r#"unique_for = "1m", unique_mode = "forever""#).contains("unknown unique_mode")
        );
        let m = msg(r#"backoff = "linear(1s)""#);
        assert!(m.contains("unknown policy `linear`"), "{m}");
        assert!(msg(r#"backoff = "exponential(10s, 1s)""#).contains("at most the maximum"));
    }

    #[test]
    fn every_bad_argument_is_reported_and_the_valid_ones_are_kept() {
        let src = r#"queue = "email", backoff = "100ms", retries = 3, priority = 9, crate = "::my::jq", max_attempts = 2"#;
        let m = messages(src);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("invalid backoff"), "{m:?}");
        assert!(m[1].contains("unknown argument `retries`"), "{m:?}");
        assert!(m[2].contains("priority 9"), "{m:?}");
        let parsed: ParsedArgs = syn::parse_str(src).unwrap();
        assert_eq!(parsed.args.queue.as_deref(), Some("email"));
        assert_eq!(parsed.args.max_attempts, Some(2));
        assert!(parsed.args.krate.is_some());
        assert!(parsed.args.backoff.is_none() && parsed.args.priority.is_none());
    }

    #[test]
    fn parsing_goes_on_after_a_malformed_argument() {
        for src in [
            r#"queue "email", max_attempts = 2"#,
            r#"queue = "a" "b", max_attempts = 2"#,
            r#"queue = 5, max_attempts = 2"#,
            r#""email", max_attempts = 2"#,
            r#"max_attempts = 1, max_attempts = 2"#,
        ] {
            let m = messages(src);
            assert_eq!(m.len(), 1, "{src}: {m:?}");
            let parsed: ParsedArgs = syn::parse_str(src).unwrap();
            assert!(parsed.args.max_attempts.is_some(), "{src}");
        }
        assert_eq!(messages(r#"queue = "a","#), Vec::<String>::new());
        assert_eq!(messages(r#"queue = , name = "n""#).len(), 1);
    }

    #[test]
    fn a_key_with_a_wrong_value_is_not_also_reported_missing() {
        for (src, only) in [
            (r#"rate = "lots", burst = 5"#, "rate"),
            (r#"cron = "61 * * * *", misfire = "skip""#, "invalid cron"),
            (
                r#"cron = "61 * * * *", tz = "Europe/Berlin""#,
                "invalid cron",
            ),
            (
                r#"unique_for = "forever", unique_mode = "window""#,
                "invalid duration",
            ),
        ] {
            let m = messages(src);
            assert_eq!(m.len(), 1, "{src}: {m:?}");
            assert!(m[0].contains(only), "{src}: {m:?}");
        }
        let m = messages(r#"cron = "61 * * * *", tz = "Mars/Base""#);
        assert!(
            m[0].contains("invalid cron") && m[1].contains("unknown time zone"),
            "{m:?}"
        );
    }
}
