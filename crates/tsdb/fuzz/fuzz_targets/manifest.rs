//! A backup's manifest; one that parses reads back the same once written
//! again. Errors are fine, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::parse_manifest(data);
});
