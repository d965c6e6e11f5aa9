//! A rewritten partition's file: opened, read from both ends, looked up,
//! checked; and a valid file of entries cut from the input, which must
//! read back whole. Errors are fine, panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::read_partition_file(data);
});
