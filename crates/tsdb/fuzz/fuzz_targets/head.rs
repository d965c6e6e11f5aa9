//! The head's encoder and the sealed-chunk codec: arbitrary points come back
//! exactly. Errors are fine, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::head_round_trip(data);
});
