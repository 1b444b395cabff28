//! Throughput of payload decoding and series evaluation.
//!
//! Run: `cargo run --release -p espwatch-core --example decode_bench`
//!
//! Single-threaded; the server decodes one request per core, so the 2-core figure is about
//! twice these.

use std::hint::black_box;
use std::time::{Duration, Instant};

use espwatch_core::ingest::{DecodeOptions, PayloadFormat, decode};
use espwatch_core::series::{Agg, Point, TelemetryQuery, TimeRange, evaluate};
use espwatch_core::{Field, Measurements, Timestamp, WellId};

const READINGS: usize = 1_000;

fn main() {
    let now = Timestamp::parse_rfc3339("2026-11-22T08:00:00Z").expect("valid");
    let opts = DecodeOptions::new(now);
    let start = now.0 - 86_400 * 1_000_000;

    let canonical = json_array(|i| {
        format!(
            r#"{{"well_id":"WELL-{:03}","ts":"{}","frequency_hz":55.0,"motor_current_a":{:.1},"motor_voltage_v":2300,"intake_pressure_psi":{:.1},"discharge_pressure_psi":2900.5,"tubing_pressure_psi":150,"intake_temp_c":75.2,"motor_temp_c":95.1,"vibration_x_g":0.81,"vibration_y_g":0.72,"flow_rate_bpd":1500,"gor_scf_bbl":600,"water_cut_pct":35.5}}"#,
            i % 10,
            Timestamp(start + i as i64 * 10_000_000),
            40.0 + (i % 17) as f64 * 0.3,
            850.0 - (i % 23) as f64,
        )
    });
    let legacy = json_array(|i| {
        format!(
            r#"{{"well_id":"TEST-{:03}","flow_rate":1500.0,"pip":{:.1},"motor_current":45.0,"motor_temp":85.0,"vibration":0.8,"vsd_frequency":55.0,"flow_variance":18.5,"torque":120.0,"gor":600.0}}"#,
            i % 10,
            850.0 - (i % 23) as f64,
        )
    });
    let ndjson = String::from_utf8(canonical.clone())
        .expect("utf8")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .replace("},{", "}\n{")
        .into_bytes();
    let csv = csv_body(start);

    println!("decode, {READINGS} readings per body:");
    bench_decode(
        "json array, canonical, 13 fields",
        PayloadFormat::Json,
        &canonical,
        &opts,
    );
    bench_decode(
        "json array, legacy sample payload",
        PayloadFormat::Json,
        &legacy,
        &opts,
    );
    bench_decode(
        "ndjson, canonical, 13 fields",
        PayloadFormat::Ndjson,
        &ndjson,
        &opts,
    );
    bench_decode("csv, canonical, 13 fields", PayloadFormat::Csv, &csv, &opts);
    bench(
        "serde_json -> Vec<Value> (baseline, no validation)",
        canonical.len(),
        || {
            let v: Vec<serde_json::Value> = serde_json::from_slice(&canonical).expect("valid");
            black_box(v.len())
        },
    );

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_s = parallel_readings_per_s(threads, &canonical, &opts);
    println!(
        "  json array, canonical, on {threads} threads (one body per thread at a time): {:.0} k readings/s",
        per_s / 1e3
    );

    println!("\nseries::evaluate, 24 h of 10 s points (8 640):");
    let points = day_of_points(start);
    let well_id = WellId::parse("WELL-001").expect("valid");
    let query = |step: Option<i64>, max_points| TelemetryQuery {
        well_id: well_id.clone(),
        range: TimeRange {
            from: Timestamp(start),
            to: Timestamp(start + 86_400 * 1_000_000),
        },
        fields: vec![
            Field::MotorCurrentA,
            Field::IntakePressurePsi,
            Field::MotorTempC,
        ],
        step_micros: step,
        agg: Agg::Avg,
        max_points,
    };
    for (name, q) in [
        ("raw, 3 fields, no downsampling", query(None, 10_000)),
        ("raw, 3 fields, downsampled to 1 000", query(None, 1_000)),
        (
            "5 min avg buckets, 3 fields",
            query(Some(300_000_000), 1_000),
        ),
    ] {
        let per_call = time_per_iteration(|| black_box(evaluate(&q, &points).ts.len()));
        println!("  {name:<45} {:>8.1} µs", per_call.as_secs_f64() * 1e6);
    }
}

/// Total decode throughput with `threads` threads decoding bodies concurrently for ~1 s.
fn parallel_readings_per_s(threads: usize, body: &[u8], opts: &DecodeOptions) -> f64 {
    let duration = Duration::from_secs(1);
    let started = Instant::now();
    let bodies: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut n = 0;
                    while started.elapsed() < duration {
                        black_box(decode(PayloadFormat::Json, body, opts).map(|d| d.items.len()))
                            .ok();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    (bodies * READINGS) as f64 / started.elapsed().as_secs_f64()
}

fn json_array(reading: impl Fn(usize) -> String) -> Vec<u8> {
    let items: Vec<String> = (0..READINGS).map(reading).collect();
    format!("[{}]", items.join(",")).into_bytes()
}

fn csv_body(start: i64) -> Vec<u8> {
    let mut out = String::from("well_id,ts");
    for f in Field::ALL {
        out.push(',');
        out.push_str(f.name());
    }
    out.push('\n');
    for i in 0..READINGS {
        out.push_str(&format!(
            "WELL-{:03},{},55,{:.1},2300,850,2900.5,150,75.2,95.1,0.81,0.72,1500,600,35.5\n",
            i % 10,
            Timestamp(start + i as i64 * 10_000_000),
            40.0 + (i % 17) as f64 * 0.3
        ));
    }
    out.into_bytes()
}

fn day_of_points(start: i64) -> Vec<Point> {
    (0..8_640)
        .map(|i| {
            let mut m = Measurements::empty();
            m.set(Field::MotorCurrentA, Some(40.0 + (i as f64 / 300.0).sin()));
            m.set(Field::IntakePressurePsi, Some(850.0 + (i % 50) as f64));
            m.set(Field::MotorTempC, Some(95.0));
            (Timestamp(start + i * 10_000_000), m)
        })
        .collect()
}

fn bench_decode(name: &str, format: PayloadFormat, body: &[u8], opts: &DecodeOptions) {
    let decoded = decode(format, body, opts).expect("decodes");
    assert_eq!(decoded.valid_count(), READINGS, "{name}: all valid");
    bench(name, body.len(), || {
        black_box(decode(format, black_box(body), opts).map(|d| d.items.len()))
    });
}

fn bench<T>(name: &str, bytes: usize, mut f: impl FnMut() -> T) {
    let per_body = time_per_iteration(|| black_box(f()));
    let readings_per_s = READINGS as f64 / per_body.as_secs_f64();
    let mb_per_s = bytes as f64 / per_body.as_secs_f64() / 1e6;
    println!(
        "  {name:<52} {:>7.0} k readings/s  {:>6.0} MB/s  ({} B/reading)",
        readings_per_s / 1e3,
        mb_per_s,
        bytes / READINGS
    );
}

/// Median of several timed batches, each at least ~50 ms.
fn time_per_iteration<T>(mut f: impl FnMut() -> T) -> Duration {
    let warmup = Instant::now();
    let mut n = 0u32;
    while warmup.elapsed() < Duration::from_millis(50) {
        black_box(f());
        n += 1;
    }
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(f());
            }
            t.elapsed() / n
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}
