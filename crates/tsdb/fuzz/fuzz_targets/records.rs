//! The main tree's records: series definitions, newest sealed points, the key
//! layouts, batch sequences and partition registrations. Errors are fine,
//! panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::decode_records(data);
});
