//! Any bytes as a `ndjson` telemetry body: the decoder never panics, and every reading it
//! accepts is within the sane ranges.
#![no_main]

use espwatch_core::ingest::{DecodeOptions, PayloadFormat, decode};
use espwatch_core::telemetry::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions::new(Timestamp(1_790_000_000_000_000));
    if let Ok(decoded) = decode(PayloadFormat::Ndjson, data, &opts) {
        espwatch_core::ingest::check_decoded_invariants(&decoded, &opts);
    }
});
