//! Durations as `s3_media_upload` spells them: an integer and one of
//! `s`, `h`, `d`, `m` (30 days) or `y` (365 days); and as Synapse's config
//! spells them (`media_retention`), where `m` is a minute.

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
    let count: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}: number too large"))?;
    count
        .checked_mul(unit_secs)
        .filter(|secs| *secs <= i64::MAX as u64 / 1000)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: number too large"))
}

/// A short duration (a settle time): a whole number and `s`, `min`, `h` or
/// `d`, or `0`. A bare `m` is refused: it means 30 days to
/// `s3_media_upload` and a minute to everyone else.
pub fn parse_short_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a whole number followed by s, min, h or d, e.g. 10min";
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_secs: u64 = match unit {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "m" => return Err(format!("ambiguous duration {text:?}: write {number}min for minutes ({EXPECTED})")),
        _ => return Err(format!("invalid duration {text:?}: {EXPECTED}")),
    };
    let count: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}: {EXPECTED}"))?;
    count
        .checked_mul(unit_secs)
        .filter(|secs| *secs <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: number too large"))
}

/// A duration as Synapse's config parser reads it: a number of
/// milliseconds, or a number followed by ms, s, m (minutes), h, d, w or y.
pub fn parse_synapse_duration(value: &serde_yaml_ng::Value) -> Result<Duration, String> {
    const EXPECTED: &str = "expected milliseconds or a number followed by ms, s, m (minutes), h, d, w or y, e.g. 90d";
    let text = match value {
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::String(s) => s.trim().to_owned(),
        _ => return Err(format!("{EXPECTED}, found something else")),
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "y" => 365 * 86_400_000,
        _ => return Err(format!("invalid duration {text:?}: {EXPECTED}")),
    };
    let count: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}: {EXPECTED}"))?;
    count
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= i64::MAX as u64)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: number too large"))
}

/// A duration the way a user wrote it: `30d`, `12h`, else humantime's words.
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}min", s / 60),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Milliseconds since the epoch, `duration` before now: the cut-off that
/// Synapse's `last_access_ts`/`created_ts` columns are compared with.
pub fn cutoff_ms(duration: Duration) -> i64 {
    now_ms() - duration.as_millis() as i64
}

/// Now, in milliseconds since the epoch (Synapse's timestamps).
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_millis() as i64
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

    #[test]
    fn short_durations() {
        assert_eq!(parse_short_duration("10min"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_short_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_short_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_short_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_short_duration("10m").unwrap_err().contains("10min"));
        for bad in ["", "min", "1.5h", "-1s", "10 min", "1y"] {
            assert!(parse_short_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn synapse_units() {
        let v = |t: &str| parse_synapse_duration(&serde_yaml_ng::from_str(t).unwrap());
        assert_eq!(v("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(v("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(v("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(v("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(v("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["soon", "1.5d", "-1d", "d", "[1]"] {
            assert!(v(bad).is_err(), "{bad}");
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
