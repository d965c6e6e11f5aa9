//! WAL values (frames with checksums) from arbitrary bytes: damaged frames
//! are skipped and counted, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hostwatch_tsdb::fuzzing::decode_wal(data);
});
