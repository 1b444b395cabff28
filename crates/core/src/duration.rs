//! Human durations as used on the command line and in query strings: `500ms`, `10s`, `1m`,
//! `24h`, `7d`, `2w`, or a bare number of seconds.

/// Parses a duration into microseconds.
pub fn parse_duration_micros(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 500ms, 10s, 1m, 24h, 7d)"))?;
    let unit_micros: f64 = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1e6,
        "ms" => 1e3,
        "us" | "µs" => 1.0,
        "m" | "min" | "mins" => 60e6,
        "h" | "hr" | "hour" | "hours" => 3_600e6,
        "d" | "day" | "days" => 86_400e6,
        "w" | "week" | "weeks" => 604_800e6,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m, h, d or w)"
            ));
        }
    };
    let micros = value * unit_micros;
    if !micros.is_finite() || micros > i64::MAX as f64 / 2.0 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(micros.round() as i64)
}

/// Formats microseconds compactly (`90s` → `1m30s` is not attempted: largest exact unit wins).
pub fn format_duration_micros(micros: i64) -> String {
    for (unit, size) in [
        ("w", 604_800_000_000i64),
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
    ] {
        if micros != 0 && micros % size == 0 {
            return format!("{}{unit}", micros / size);
        }
    }
    format!("{micros}us")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration_micros("500ms"), Ok(500_000));
        assert_eq!(parse_duration_micros("10s"), Ok(10_000_000));
        assert_eq!(parse_duration_micros("10"), Ok(10_000_000));
        assert_eq!(parse_duration_micros("1m"), Ok(60_000_000));
        assert_eq!(parse_duration_micros("1.5h"), Ok(5_400_000_000));
        assert_eq!(parse_duration_micros("7d"), Ok(604_800_000_000));
        assert!(parse_duration_micros("7y").is_err());
        assert!(parse_duration_micros("").is_err());
        assert!(parse_duration_micros("m").is_err());
    }

    #[test]
    fn formats_largest_exact_unit() {
        assert_eq!(format_duration_micros(60_000_000), "1m");
        assert_eq!(format_duration_micros(90_000_000), "90s");
        assert_eq!(format_duration_micros(604_800_000_000), "1w");
    }
}
