//! Timestamps as historian exports write them: `2026-11-22 08:01:00` (space instead of `T`),
//! with an offset, or naive local time with a zone the sender declares. Never guessed: a naive
//! time without a declared zone is an error.
//!
//! Zones are fixed UTC offsets (`+03:00`, `-05:30`, `UTC`). A fixed offset has no daylight
//! saving, so no local time is skipped or repeated and every naive time maps to exactly one
//! instant. Named zones with DST (`Europe/Berlin`) are refused with a clear message: their
//! gaps and overlaps make some local times nonexistent or ambiguous, and this build carries no
//! time-zone database to tell which; convert such exports to an offset first.
//!
//! The zone comes from the sender (`?timezone=`, `espwatch ingest --timezone`, the AMQP
//! `timezone` header) or, when the sender declares none, from the well's registry entry
//! (`WellMeta::timezone`): see [`crate::ingest::apply_well_zones`].

use chrono::NaiveDateTime;

use crate::telemetry::{Timestamp, TimestampError};

/// Part of the reason every naive time without a declared zone is refused with: how a
/// rejection that a well's registry zone could resolve is recognised.
pub const NO_ZONE: &str = "a local time without a zone";

/// A fixed offset from UTC, in seconds east (`+03:00` = 10 800).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UtcOffset(i32);

impl UtcOffset {
    pub const UTC: UtcOffset = UtcOffset(0);

    /// `+03:00`, `-0530`, `+03`, `UTC`, `Z`. Named zones are refused (see the module
    /// documentation).
    pub fn parse(text: &str) -> Result<UtcOffset, String> {
        if text.starts_with(' ') && text.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "{text:?}: a `+` in a URL query reads as a space; write it as %2B (timezone=%2B03:00)"
            ));
        }
        let t = text.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
            return Ok(UtcOffset::UTC);
        }
        let t2 = t
            .strip_prefix("UTC")
            .or_else(|| t.strip_prefix("utc"))
            .unwrap_or(t);
        let (sign, rest) = match t2.as_bytes().first() {
            Some(b'+') => (1, &t2[1..]),
            Some(b'-') => (-1, &t2[1..]),
            _ => {
                return Err(format!(
                    "{text:?} is not a UTC offset: give it as +03:00 or -05:30 (named zones with \
                     daylight saving are not supported: their skipped and repeated hours make \
                     local times ambiguous; convert to an offset first)"
                ));
            }
        };
        let digits: String = rest.chars().filter(|c| *c != ':').collect();
        let bad = || format!("{text:?} is not a UTC offset (expected e.g. +03:00)");
        if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
            return Err(bad());
        }
        let hours: i32 = digits[..2].parse().map_err(|_| bad())?;
        let minutes: i32 = if digits.len() == 4 {
            digits[2..].parse().map_err(|_| bad())?
        } else {
            0
        };
        if hours > 14 || minutes > 59 {
            return Err(bad());
        }
        Ok(UtcOffset(sign * (hours * 3600 + minutes * 60)))
    }

    pub fn seconds(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let a = self.0.abs();
        write!(f, "{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
    }
}

/// Parses RFC 3339, the same with a space for `T`, or (with `zone`) a naive local time
/// `YYYY-MM-DD[T ]hh:mm[:ss[.frac]]`.
pub fn parse_timestamp(text: &str, zone: Option<UtcOffset>) -> Result<Timestamp, TimestampError> {
    let t = text.trim();
    if let Ok(ts) = Timestamp::parse_rfc3339(t) {
        return Ok(ts);
    }
    let b = t.as_bytes();
    let spaced = b.len() > 10 && b[10] == b' ';
    let normalised = if spaced {
        let mut s = t.to_owned();
        s.replace_range(10..11, "T");
        s
    } else {
        t.to_owned()
    };
    if spaced && let Ok(ts) = Timestamp::parse_rfc3339(&normalised) {
        return Ok(ts);
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&normalised, f).ok());
    match (naive, zone) {
        (Some(local), Some(zone)) => {
            let micros = local.and_utc().timestamp_micros() - i64::from(zone.0) * 1_000_000;
            if micros < 0 {
                return Err(TimestampError::OutOfRange);
            }
            Ok(Timestamp(micros))
        }
        (Some(_), None) => Err(TimestampError::Invalid(format!(
            "{NO_ZONE}: send an offset (2026-11-22T08:01:00+03:00), declare the zone of the \
             export (espwatch ingest --timezone, or ?timezone= on the API), or give the well a \
             `timezone` in the registry"
        ))),
        (None, _) => Timestamp::parse_rfc3339(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn historian_styles_are_read_and_naive_times_need_a_zone() {
        let riyadh = UtcOffset::parse("+03:00").unwrap();
        assert_eq!(
            parse_timestamp("2026-11-22 08:01:00Z", None),
            Ok(at("2026-11-22T08:01:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-11-22 08:01:00+03:00", None),
            Ok(at("2026-11-22T05:01:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-11-22 08:01:00", Some(riyadh)),
            Ok(at("2026-11-22T05:01:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-11-22T08:01:00.250", Some(UtcOffset::UTC)),
            Ok(at("2026-11-22T08:01:00.250Z"))
        );
        assert_eq!(
            parse_timestamp("2026-11-22 08:01", Some(riyadh)),
            Ok(at("2026-11-22T05:01:00Z"))
        );
        // An explicit offset in the value wins over the declared zone.
        assert_eq!(
            parse_timestamp("2026-11-22 08:01:00Z", Some(riyadh)),
            Ok(at("2026-11-22T08:01:00Z"))
        );
        let e = parse_timestamp("2026-11-22 08:01:00", None).unwrap_err();
        assert!(e.to_string().contains("without a zone"), "{e}");
        assert!(parse_timestamp("22/11/2026 08:01", Some(riyadh)).is_err());
    }

    #[test]
    fn offsets_parse_and_named_zones_are_refused() {
        assert_eq!(UtcOffset::parse("+03:00").unwrap().seconds(), 10_800);
        assert_eq!(UtcOffset::parse("-0530").unwrap().seconds(), -19_800);
        assert_eq!(UtcOffset::parse("UTC+03").unwrap().seconds(), 10_800);
        assert_eq!(UtcOffset::parse("UTC").unwrap(), UtcOffset::UTC);
        assert_eq!(UtcOffset::parse("-0530").unwrap().to_string(), "-05:30");
        assert!(UtcOffset::parse(" 03:00").unwrap_err().contains("%2B"));
        let e = UtcOffset::parse("Europe/Berlin").unwrap_err();
        assert!(e.contains("daylight saving"), "{e}");
        assert!(UtcOffset::parse("+25:00").is_err());
        assert!(UtcOffset::parse("+3").is_err());
    }
}
