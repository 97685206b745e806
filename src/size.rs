//! Sizes as people write them: `1048576`, `10M`, `100MiB`, `1.5G`.
//!
//! `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024, as
//! in Synapse's config (`max_upload_size: 50M`) and in the sizes this tool
//! prints; `KB`, `MB`, `GB`, `TB` are powers of 1000.

/// Parse a size into bytes; the error names the value and what was expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected bytes, or a number and K, M, G, T (1024-based, also KiB, MiB, ...) or \
                            KB, MB, GB, TB (1000-based), e.g. 10M";
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_bytes: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "k" | "KiB" => 1024.0,
        "M" | "MiB" => 1024f64.powi(2),
        "G" | "GiB" => 1024f64.powi(3),
        "T" | "TiB" => 1024f64.powi(4),
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(format!("invalid size {text:?}: {EXPECTED}")),
    };
    let value: f64 = number.parse().map_err(|_| format!("invalid size {text:?}: {EXPECTED}"))?;
    let bytes = value * unit_bytes;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(format!("invalid size {text:?}: too large"));
    }
    if unit.trim().is_empty() && number.contains('.') {
        return Err(format!("invalid size {text:?}: a number of bytes is whole"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("100MiB"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("1.5G"), Ok(1024 * 1024 * 1536));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "10X", "-1", "1.5", "1e9", "10 Mi"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
