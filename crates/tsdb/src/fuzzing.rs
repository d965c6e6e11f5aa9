//! Entry points for the fuzz targets (`crates/tsdb/fuzz`, run with
//! `crates/tsdb/fuzz/run.sh`) and for the property tests below: every
//! decoder of bytes the store reads back from disk, given arbitrary bytes,
//! returns an error or a value, never panics, hangs or allocates beyond
//! what the bytes can describe. Where a checksum guards a payload, the
//! bytes are also tried as the payload inside a valid envelope (a fuzzer
//! seldom gets a CRC right), and where an encoder exists, what decodes is
//! encoded again and must decode to the same value.
//!
//! The decoders, by where their bytes live:
//! - partitions: raw chunks, 1 h rows, process snapshot blocks (rows and
//!   columns, whole and at a time): [`decode_chunk`], [`decode_snapshot`];
//! - WAL generations: frames and their payloads: [`decode_wal`];
//! - the main tree: series definitions, newest sealed points (`L`), the
//!   key layouts, batch sequences, partition registrations and the
//!   accept log: [`decode_records`], [`decode_accept_log`];
//! - files: a partition's marker, a backup's manifest, a rewritten
//!   partition's file: [`check_marker`], [`parse_manifest`],
//!   [`read_partition_file`];
//! - memory: the head's encoder, only ever decoding what it wrote, checked
//!   by a round trip of arbitrary points: [`head_round_trip`].

use crate::chunk::{self, KIND_RAW, KIND_ROWS, KIND_SNAPSHOT_COLUMNS, KIND_SNAPSHOTS};
use crate::codec::HeadChunk;
use crate::model::{Point, SeriesKey};

/// The first 8 bytes as a number (0 when shorter) and the rest.
fn split_i64(bytes: &[u8]) -> (i64, &[u8]) {
    match bytes.split_first_chunk::<8>() {
        Some((head, rest)) => (i64::from_le_bytes(*head), rest),
        None => (0, bytes),
    }
}

/// Decodes a raw chunk value, 1 h rows and bare point blocks, as stored
/// and inside a valid envelope; a raw chunk that decodes whole must
/// decode alike over any range.
pub fn decode_chunk(bytes: &[u8]) {
    let _ = chunk::decode_raw(bytes);
    let _ = chunk::decode_rows(bytes);
    let _ = chunk::raw_parts(bytes);
    let _ = crate::snapshot::decode(bytes);
    let _ = crate::snapshot::decode_columns(bytes);
    let mut r = crate::codec::ByteReader::new(bytes);
    let _ = crate::codec::decode_points(&mut r);
    let (at, payload) = split_i64(bytes);
    let raw = chunk::seal(KIND_RAW, 7, payload);
    let _ = chunk::raw_parts(&raw);
    if let Ok((lsn, points)) = chunk::decode_raw(&raw) {
        assert_eq!(lsn, 7);
        let mut within = Vec::new();
        let end = at.saturating_add(3_600_000);
        if chunk::decode_raw_within(&raw, at, end, &mut within).is_ok() {
            let expected: Vec<Point> = points
                .iter()
                .copied()
                .filter(|p| p.t_ms >= at && p.t_ms < end)
                .collect();
            assert_eq!(bits(&within), bits(&expected), "a range of a raw chunk");
        }
    } else {
        let _ = chunk::decode_raw_within(&raw, at, at.saturating_add(3_600_000), &mut Vec::new());
    }
    let _ = chunk::decode_rows(&chunk::seal(KIND_ROWS, 7, payload));
}

/// Points as comparable bits (NaN is not equal to itself).
fn bits(points: &[Point]) -> Vec<(i64, u64)> {
    points.iter().map(|p| (p.t_ms, p.value.to_bits())).collect()
}

/// Decodes a process snapshot block, whole and at a time, as stored and
/// inside valid envelopes of both kinds (rows, columns); when a block
/// decodes whole with its times in order, the snapshot at a time is the
/// newest of them at or before it.
pub fn decode_snapshot(bytes: &[u8]) {
    let (at, payload) = split_i64(bytes);
    let _ = crate::snapshot::decode(bytes);
    let _ = crate::snapshot::decode_at(bytes, at);
    for kind in [KIND_SNAPSHOTS, KIND_SNAPSHOT_COLUMNS] {
        let value = chunk::seal(kind, 3, payload);
        let whole = crate::snapshot::decode(&value);
        let one = crate::snapshot::decode_at(&value, at);
        if let (Ok((_, all)), Ok(one)) = (whole, one)
            && all.windows(2).all(|w| w[0].t_ms < w[1].t_ms)
        {
            let newest = all.iter().rev().find(|s| s.t_ms <= at);
            assert_eq!(
                one.as_ref().map(|s| s.t_ms),
                newest.map(|s| s.t_ms),
                "the snapshot at {at} of a block of kind {kind}"
            );
        }
    }
}

/// Decodes a WAL value, and the same bytes as one frame's payload (past
/// the checksum a fuzzer would rarely get right).
pub fn decode_wal(bytes: &[u8]) {
    let _ = crate::wal::decode_value(bytes);
    let _ = crate::wal::decode_payload(bytes);
}

/// Decodes an accept-log entry; every span it yields is non-empty.
pub fn decode_accept_log(bytes: &[u8]) {
    if let Ok(spans) = crate::forward::decode_entry(bytes) {
        for s in spans {
            assert!(s.start_ms < s.end_ms, "an empty or inverted span: {s:?}");
            assert!(s.series.is_sorted(), "series ids out of order: {s:?}");
        }
    }
}

/// Decodes the main tree's records: the bytes as a series definition
/// (encoded again, it decodes the same), a newest sealed point, every
/// key layout, a batch sequence and a partition registration.
pub fn decode_records(bytes: &[u8]) {
    if let Ok(key) = SeriesKey::decode(bytes) {
        let again = SeriesKey::decode(&key.encode());
        assert_eq!(again.ok().as_ref(), Some(&key), "a series definition");
    }
    if let Some(p) = crate::keys::decode_last(bytes) {
        let encoded = crate::keys::encode_last(p);
        assert_eq!(&encoded[..], bytes, "an L record");
    }
    if let Some((tier, id, start)) = crate::keys::parse_chunk(bytes) {
        assert_eq!(
            &crate::keys::chunk(tier, id, start)[..],
            bytes,
            "a chunk key"
        );
    }
    if let Some((host, start)) = crate::keys::parse_snapshots(bytes) {
        assert_eq!(crate::keys::snapshots(host, start), bytes, "a snapshot key");
    }
    if let Some((host, source)) = crate::keys::parse_sequence(bytes) {
        assert_eq!(crate::keys::sequence(host, source), bytes, "a sequence key");
    }
    let _ = crate::keys::parse_wal(bytes);
    if let Some(start) = crate::partition::parse_registry_key(bytes) {
        assert_eq!(
            crate::partition::registry_key(start),
            bytes,
            "a registration"
        );
    }
}

/// Checks a partition's marker file: the span from the first 16 bytes,
/// the text from the rest (lossily UTF-8); a marker written for a span
/// passes for that span.
pub fn check_marker(bytes: &[u8]) {
    let (start, rest) = split_i64(bytes);
    let (end, text) = split_i64(rest);
    let _ = crate::partition::check_marker(&String::from_utf8_lossy(text), start, end);
    for format in [crate::partition::FORMAT_SLED, crate::partition::FORMAT_FILE] {
        let written = crate::partition::marker_text(format, start, end);
        assert_eq!(
            crate::partition::check_marker(&written, start, end),
            Ok(format)
        );
    }
}

/// Opens `bytes` as a rewritten partition's file (written to a temporary
/// file, removed after) and, when it opens, reads every entry from both
/// ends, looks keys up and checks every block; then the same for a valid
/// file of entries cut from `bytes`, which must read back whole.
pub fn read_partition_file(bytes: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "hostwatch-fuzz-partition-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    if std::fs::write(&path, bytes).is_ok() {
        let _ = crate::partition::fuzz_read_file(&path);
    }
    let _ = std::fs::remove_file(&path);
    // Entries cut from the bytes: keys made distinct and sorted.
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = bytes
        .chunks(9)
        .enumerate()
        .map(|(i, c)| {
            let mut key = (i as u32).to_be_bytes().to_vec();
            key.extend_from_slice(&c[..c.len().min(3)]);
            (key, c[c.len().min(3)..].to_vec())
        })
        .collect();
    entries.sort();
    let written = crate::partition::fuzz_write_file(&path, &entries);
    let read = crate::partition::fuzz_read_file(&path);
    let _ = std::fs::remove_file(&path);
    if written.is_ok() {
        assert_eq!(read.as_ref(), Ok(&entries), "a written file reads back");
    }
}

/// Parses a backup manifest (the bytes lossily as UTF-8); one that
/// parses, written again, parses the same.
pub fn parse_manifest(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(manifest) = crate::backup::Manifest::parse(&text) {
        let again = crate::backup::Manifest::parse(&manifest.encode());
        assert_eq!(again.as_ref(), Ok(&manifest), "a manifest written again");
    }
}

/// Pushes points read from the bytes (a time step of 1 to 2^32 ms and a
/// value's bits per 12 bytes, from a start in the first 8) into a head
/// chunk and into a sealed raw chunk: both give them back exactly, whole
/// and over a range.
pub fn head_round_trip(bytes: &[u8]) {
    let (start, rest) = split_i64(bytes);
    // Sample times are validated against the clock: within 2^50 ms of 0.
    let mut t = start.rem_euclid(1 << 51) - (1 << 50);
    let mut points = Vec::new();
    for step in rest.chunks_exact(12) {
        let (delta, value) = step.split_at(4);
        let delta = u32::from_le_bytes(delta.try_into().unwrap_or_default());
        let value = u64::from_le_bytes(value.try_into().unwrap_or_default());
        t += i64::from(delta) + 1;
        points.push(Point {
            t_ms: t,
            value: f64::from_bits(value),
        });
    }
    let Some((&first, more)) = points.split_first() else {
        return;
    };
    let mut head = HeadChunk::new(first);
    for &p in more {
        head.push(p);
    }
    assert_eq!(head.len(), points.len());
    assert_eq!(bits(&head.points()), bits(&points), "the head's points");
    let middle = points[points.len() / 2].t_ms;
    let mut within = Vec::new();
    head.points_within(middle, t + 1, &mut within);
    assert_eq!(
        bits(&within),
        bits(&points[points.len() / 2..]),
        "the head's points from the middle"
    );
    let newest = head.newest_before(middle);
    let expected = points.iter().rev().find(|p| p.t_ms < middle);
    assert_eq!(
        newest.map(|p| (p.t_ms, p.value.to_bits())),
        expected.map(|p| (p.t_ms, p.value.to_bits())),
        "the head's newest point before the middle"
    );
    let sealed = chunk::encode_raw(&points, 5);
    let decoded = chunk::decode_raw(&sealed).map(|(lsn, p)| (lsn, bits(&p)));
    assert_eq!(decoded.ok(), Some((5, bits(&points))), "a sealed chunk");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid manifest, as a backup writes it.
    fn manifest_text() -> String {
        crate::backup::Manifest {
            format: crate::backup::BACKUP_FORMAT,
            store_format: crate::partition::STORE_FORMAT,
            partition_format: crate::partition::PARTITION_FORMAT,
            created_ms: 1_800_000_000_000,
            group: 42,
            partitions: vec![(0, 86_400_000)],
            skipped: vec!["partition 5: its directory is missing".into()],
            files: vec![crate::backup::BackupFile {
                path: "data/db".into(),
                size: 10,
                sha256: [7; 32],
            }],
        }
        .encode()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_decoder_takes_garbage(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            decode_chunk(&bytes);
            decode_snapshot(&bytes);
            decode_wal(&bytes);
            decode_accept_log(&bytes);
            decode_records(&bytes);
            check_marker(&bytes);
            parse_manifest(&bytes);
            head_round_trip(&bytes);
        }
    }

    proptest! {
        // A file written and read per case: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn damaged_partition_files_are_refused_or_read(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("chunks");
            let entries: Vec<(Vec<u8>, Vec<u8>)> = (0u32..40)
                .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; (i * 7) as usize]))
                .collect();
            crate::partition::fuzz_write_file(&path, &entries).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            } else {
                bytes[i] = byte;
            }
            read_partition_file(&bytes);
        }

        #[test]
        fn damaged_manifests_are_refused_or_read_back(
            at in any::<prop::sample::Index>(),
            with in prop::collection::vec(any::<u8>(), 0..12),
            cut in any::<bool>(),
        ) {
            let mut bytes = manifest_text().into_bytes();
            let i = at.index(bytes.len());
            if cut {
                bytes.truncate(i);
            }
            bytes.splice(i..i, with);
            parse_manifest(&bytes);
        }

        #[test]
        fn damaged_markers_are_refused(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut text = crate::partition::marker_text(crate::partition::FORMAT_SLED, 0, 86_400_000).into_bytes();
            let i = at.index(text.len());
            text[i] = byte;
            let mut bytes = 0i64.to_le_bytes().to_vec();
            bytes.extend(86_400_000i64.to_le_bytes());
            bytes.extend(text);
            check_marker(&bytes);
        }
    }

    #[test]
    fn manifests_with_numbers_out_of_their_range_are_refused() {
        let text = manifest_text();
        for (line, bad) in [
            ("format 1", "format 4294967297"),
            ("group 42", "group -1"),
            ("store_format 3", "store_format -4294967293"),
        ] {
            assert!(text.contains(line), "{text}");
            let err = crate::backup::Manifest::parse(&text.replace(line, bad)).unwrap_err();
            assert!(err.contains("not a number"), "{bad}: {err}");
        }
    }
}
