//! Any text as the small parsers behind query strings and flags: RFC 3339 timestamps,
//! durations (`10s`, `7d`), well ids. They answer or refuse, never panic.
#![no_main]

use espwatch_core::telemetry::{Timestamp, WellId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ts) = Timestamp::parse_rfc3339(text) {
            // What parses prints and parses back to the same instant.
            assert_eq!(Timestamp::parse_rfc3339(&ts.to_rfc3339()), Ok(ts));
        }
        let _ = espwatch_core::duration::parse_duration_micros(text);
        if let Ok(id) = WellId::parse(text) {
            assert_eq!(id.as_str(), text);
        }
    }
});
