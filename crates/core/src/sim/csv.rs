//! Fast writer for the canonical telemetry CSV (`well_id,ts,<every field>`), the format
//! `POST /api/v1/telemetry` and `espwatch ingest` accept. Values are written with the fixed
//! number of decimals the gauges report, without going through float formatting, because the
//! simulator writes tens of millions of rows.

use crate::telemetry::{Field, Measurements, Timestamp};

/// Decimals each channel is written with (its gauge resolution).
pub fn decimals(field: Field) -> u32 {
    match field {
        Field::FrequencyHz => 2,
        Field::VibrationXG | Field::VibrationYG => 3,
        Field::MotorVoltageV | Field::FlowRateBpd | Field::GorScfBbl => 0,
        _ => 1,
    }
}

pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(b"well_id,ts");
    for f in Field::ALL {
        out.push(b',');
        out.extend_from_slice(f.name().as_bytes());
    }
    out.push(b'\n');
}

pub fn write_row(out: &mut Vec<u8>, well_id: &str, ts: Timestamp, values: &Measurements) {
    out.extend_from_slice(well_id.as_bytes());
    out.push(b',');
    write_timestamp(out, ts);
    for f in Field::ALL {
        out.push(b',');
        if let Some(v) = values.get(f) {
            write_fixed(out, v, decimals(f));
        }
    }
    out.push(b'\n');
}

fn write_int(out: &mut Vec<u8>, mut n: u64, min_digits: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 && buf.len() - i >= min_digits {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes `v` rounded to `decimals` places.
pub fn write_fixed(out: &mut Vec<u8>, v: f64, decimals: u32) {
    let scale = 10u64.pow(decimals);
    let scaled = (v * scale as f64).round();
    if !scaled.is_finite() || scaled.abs() > 9e15 {
        out.extend_from_slice(format!("{v}").as_bytes());
        return;
    }
    let neg = scaled < 0.0;
    let n = scaled.abs() as u64;
    if neg && n != 0 {
        out.push(b'-');
    }
    write_int(out, n / scale, 1);
    if decimals > 0 {
        out.push(b'.');
        write_int(out, n % scale, decimals as usize);
    }
}

/// RFC 3339 UTC with a `Z`, seconds precision unless there is a fraction.
pub fn write_timestamp(out: &mut Vec<u8>, ts: Timestamp) {
    let secs = ts.0.div_euclid(1_000_000);
    let micros = ts.0.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    write_int(out, y as u64, 4);
    out.push(b'-');
    write_int(out, m as u64, 2);
    out.push(b'-');
    write_int(out, d as u64, 2);
    out.push(b'T');
    write_int(out, (sod / 3600) as u64, 2);
    out.push(b':');
    write_int(out, (sod / 60 % 60) as u64, 2);
    out.push(b':');
    write_int(out, (sod % 60) as u64, 2);
    if micros != 0 {
        out.push(b'.');
        write_int(out, micros as u64, 6);
    }
    out.push(b'Z');
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_chrono() {
        for micros in [
            0i64,
            1_767_225_600_000_000,
            951_782_400_000_000,
            4_102_444_799_500_000,
        ] {
            let mut out = Vec::new();
            write_timestamp(&mut out, Timestamp(micros));
            let parsed = Timestamp::parse_rfc3339(std::str::from_utf8(&out).unwrap()).unwrap();
            assert_eq!(
                parsed,
                Timestamp(micros),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn fixed_point_values() {
        let cases = [
            (12.345, 2, "12.35"),
            (-0.04, 1, "0.0"),
            (-3.26, 1, "-3.3"),
            (7.0, 0, "7"),
            (0.005, 3, "0.005"),
        ];
        for (v, d, want) in cases {
            let mut out = Vec::new();
            write_fixed(&mut out, v, d);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
