//! Durations as `s3_media_upload` spells them: an integer and one of
//! `s`, `h`, `d`, `m` (30 days) or `y` (365 days).

use std::time::Duration;

/// Parse `"30d"`, `"2m"`, `"1y"`, ... into a [`Duration`].
///
/// The number must be a non-negative integer. The error message names the
/// value and what was expected, so clap can show it as-is.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a whole number followed by s, h, d, m (30 days) or y (365 days), e.g. 30d";
    let Some(suffix) = text.chars().last() else {
        return Err(format!("empty duration: {EXPECTED}"));
    };
    let number = &text[..text.len() - suffix.len_utf8()];
    let unit_secs: u64 = match suffix {
        's' => 1,
        'h' => 3600,
        'd' => 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(format!("invalid duration {text:?}: {EXPECTED}")),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid duration {text:?}: {EXPECTED}"));
    }
    let count: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
    count
        .checked_mul(unit_secs)
        .filter(|secs| *secs <= i64::MAX as u64 / 1000)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: number too large"))
}

/// Milliseconds since the epoch, `duration` before now: the cut-off that
/// Synapse's `last_access_ts`/`created_ts` columns are compared with.
pub fn cutoff_ms(duration: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_millis() as i64 - duration.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_match_the_python_tool() {
        assert_eq!(parse_duration("0d"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("2y"), Ok(Duration::from_secs(730 * 86_400)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "d", "5", "5x", "-1d", "+1d", " 1d", "1.5d", "1dd", "ä", "99999999999999999999y"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn round_trips_days(days in 0u64..100_000) {
            prop_assert_eq!(parse_duration(&format!("{days}d")), Ok(Duration::from_secs(days * 86_400)));
        }
    }
}
