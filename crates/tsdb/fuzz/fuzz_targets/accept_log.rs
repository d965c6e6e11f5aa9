//! Accept-log entries (the spans and series of each accepted batch). Errors
//! are fine, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::decode_accept_log(data);
});
