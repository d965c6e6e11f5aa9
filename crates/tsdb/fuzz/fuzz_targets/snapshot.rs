//! Process snapshot blocks (rows and columns), whole and at a time, as stored
//! and inside valid envelopes. Errors are fine, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::decode_snapshot(data);
});
