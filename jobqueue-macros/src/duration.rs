//! The duration and backoff syntax of `#[job(...)]`'s arguments: `"250ms"`,
//! `"30s"`, `"2m"`, `"1h"` or an integer of milliseconds, and
//! `"exponential(1s, 10m)"`, `"fixed(30s)"` or `"none"`.

use proc_macro2::Span;
use syn::parse::ParseStream;
use syn::{LitInt, LitStr};

/// A duration given as a string with a unit or an integer of milliseconds.
pub(crate) fn duration_arg(input: ParseStream<'_>) -> syn::Result<(u64, Span)> {
    let lookahead = input.lookahead1();
    if lookahead.peek(LitStr) {
        let lit: LitStr = input.parse()?;
        let ms = parse_duration_ms(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
        Ok((ms, lit.span()))
    } else if lookahead.peek(LitInt) {
        let lit: LitInt = input.parse()?;
        Ok((lit.base10_parse()?, lit.span()))
    } else {
        Err(lookahead.error())
    }
}

/// A retry backoff policy, as `#[job(backoff = "...")]` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackoffArg {
    Exponential { base_ms: u64, max_ms: u64 },
    Fixed { delay_ms: u64 },
    None,
}

/// Parses `"exponential(1s, 10m)"`, `"fixed(30s)"` or `"none"`.
pub(crate) fn parse_backoff(text: &str) -> Result<BackoffArg, String> {
    let invalid = |why: &str| {
        format!(
            "invalid backoff {text:?}: {why}; expected \"exponential(BASE, MAX)\", \"fixed(DELAY)\" or \"none\", \
             e.g. \"exponential(1s, 10m)\""
        )
    };
    let text_trimmed = text.trim();
    if text_trimmed == "none" {
        return Ok(BackoffArg::None);
    }
    let (kind, rest) = text_trimmed
        .split_once('(')
        .ok_or_else(|| invalid("no policy name"))?;
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| invalid("missing `)`"))?;
    let durations = inner
        .split(',')
        .map(|d| parse_duration_ms(d).map_err(|e| invalid(&e)))
        .collect::<Result<Vec<u64>, String>>()?;
    match (kind.trim(), durations.as_slice()) {
        ("fixed", [delay_ms]) => Ok(BackoffArg::Fixed {
            delay_ms: *delay_ms,
        }),
        ("exponential", [base_ms, max_ms]) if base_ms <= max_ms && *base_ms > 0 => {
            Ok(BackoffArg::Exponential {
                base_ms: *base_ms,
                max_ms: *max_ms,
            })
        }
        ("exponential", [_, _]) => Err(invalid(
            "the base must be above zero and at most the maximum",
        )),
        ("fixed" | "exponential", _) => Err(invalid("wrong number of durations")),
        (other, _) => Err(invalid(&format!("unknown policy `{other}`"))),
    }
}

/// Parses `"250ms"`, `"30s"`, `"2m"`, `"1h"` or `"1500"` (milliseconds).
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "invalid duration {text:?}: expected a whole number followed by ms, s, m or h \
             (\"250ms\", \"30s\", \"2m\", \"1h\"), or an integer of milliseconds"
        )
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    let scale = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(invalid()),
    };
    n.checked_mul(scale).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_milliseconds() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        for bad in [
            "",
            "s",
            "2 min",
            "1.5s",
            "-3s",
            "2d",
            "99999999999999999999h",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_policies_parse() {
        assert_eq!(parse_backoff("none"), Ok(BackoffArg::None));
        assert_eq!(
            parse_backoff("fixed(30s)"),
            Ok(BackoffArg::Fixed { delay_ms: 30_000 })
        );
        assert_eq!(
            parse_backoff("exponential(1s, 10m)"),
            Ok(BackoffArg::Exponential {
                base_ms: 1000,
                max_ms: 600_000
            })
        );
        assert!(parse_backoff("fixed(1s, 2s)").is_err());
        assert!(parse_backoff("fixed 1s").is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::parse_duration_ms;

    proptest! {
        #[test]
        fn any_whole_number_with_a_unit_parses_to_its_milliseconds(n in 0u64..1_000_000_000, unit in 0usize..5, pad in "[ \t]{0,2}") {
            let (suffix, scale) = [("", 1), ("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)][unit];
            let text = format!("{pad}{n}{suffix}{pad}");
            prop_assert_eq!(parse_duration_ms(&text), Ok(n * scale));
        }

        #[test]
        fn no_text_makes_the_parser_panic_and_errors_say_what_is_expected(text in "\\PC{0,12}") {
            if let Err(message) = parse_duration_ms(&text) {
                prop_assert!(message.contains("expected a whole number followed by ms, s, m or h"));
            }
        }

        #[test]
        fn overflow_is_an_error_not_a_wrap(n in (u64::MAX / 3_600_000 + 1)..u64::MAX) {
            let text = format!("{n}h");
            prop_assert!(parse_duration_ms(&text).is_err());
        }
    }
}
