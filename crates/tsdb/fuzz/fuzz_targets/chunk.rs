//! Raw chunks, aggregate rows, snapshot blocks and bare point blocks from
//! arbitrary bytes: errors are fine, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::decode_chunk(data);
});
