//! A partition directory's marker file, against a span. Errors are fine,
//! panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::check_marker(data);
});
