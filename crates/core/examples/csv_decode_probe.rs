//! Decodes CSV files as `espwatch ingest` does (header + batches of lines, each batch one
//! `decode`), for profiling the decoder on real exports:
//!
//! ```sh
//! cargo build --release -p espwatch-core --example csv_decode_probe
//! valgrind --tool=callgrind --toggle-collect='*ingest*decode*' \
//!     target/release/examples/csv_decode_probe sim/*.csv
//! ```
//!
//! Prints readings, valid and rejected counts, and the time spent decoding (only decoding:
//! the batches are cut before the clock runs).

use std::hint::black_box;
use std::time::Instant;

use espwatch_core::Timestamp;
use espwatch_core::ingest::{DecodeOptions, PayloadFormat, decode};

const BATCH: usize = 10_000;

fn main() {
    let opts = DecodeOptions {
        max_readings: usize::MAX,
        ..DecodeOptions::new(Timestamp::parse_rfc3339("2100-01-01T00:00:00Z").expect("valid"))
    };
    let mut bodies = Vec::new();
    for path in std::env::args().skip(1) {
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut lines = text.split_inclusive(|&b| b == b'\n');
        let header = lines.next().unwrap_or_default().to_vec();
        let mut body = header.clone();
        let mut n = 0;
        for line in lines {
            body.extend_from_slice(line);
            n += 1;
            if n == BATCH {
                bodies.push(std::mem::replace(&mut body, header.clone()));
                n = 0;
            }
        }
        if n > 0 {
            bodies.push(body);
        }
    }
    let started = Instant::now();
    let (mut valid, mut rejected) = (0, 0);
    for body in &bodies {
        let decoded = decode(PayloadFormat::Csv, black_box(body), &opts).expect("decodes");
        valid += decoded.valid_count();
        rejected += decoded.rejected_count();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} readings ({valid} valid, {rejected} rejected) in {elapsed:.3} s: {:.0} k readings/s",
        valid + rejected,
        (valid + rejected) as f64 / elapsed / 1e3
    );
}
