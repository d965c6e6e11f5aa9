use super::*;
use hostwatch_proto::v1::{ProcessInfo, ProcessSnapshot, SeriesPoints};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A batch of `points` points of one series, told apart by `tag`.
fn batch(tag: u64, points: usize) -> Batch {
    Batch {
        seq: 0,
        series: vec![SeriesPoints {
            metric: "host_load1".into(),
            labels: vec![Label {
                name: "tag".into(),
                value: (tag % 3).to_string(),
            }],
            timestamps_ms: (0..points as i64).map(|i| tag as i64 * 1000 + i).collect(),
            values: (0..points).map(|i| tag as f64 + i as f64).collect(),
        }],
        dropped_batches_total: 0,
        processes: vec![],
    }
}

/// Every batch the spool would send, one at a time.
fn contents(spool: &Spool) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut after = 0;
    while let Some(b) = spool.batch_after(after, 0) {
        after = b.seq;
        out.push(b);
    }
    out
}

fn seqs(spool: &Spool) -> Vec<u64> {
    contents(spool).iter().map(|b| b.seq).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn numbers_persist_across_reopen_and_acked_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    let id = spool.spool_id();
    assert_ne!(id, 0);
    for i in 0..3 {
        assert_eq!(spool.push(batch(i, 2)), i + 1);
    }
    assert_eq!(seqs(&spool), [1, 2, 3]);
    spool.ack_through(2);
    assert_eq!(seqs(&spool), [3]);
    drop(spool);

    // Acknowledgements are not written down: the Welcome tells them again.
    let spool = Spool::open(dir.path(), 64 << 10);
    assert_eq!(spool.spool_id(), id);
    assert_eq!(seqs(&spool), [1, 2, 3]);
    assert_eq!(spool.push(batch(9, 2)), 4);
    spool.ack_through(4);
    assert!(spool.is_empty());
    drop(spool);

    // Everything acknowledged: the numbering still survives.
    let spool = Spool::open(dir.path(), 64 << 10);
    assert_eq!(spool.spool_id(), id);
    assert_eq!(spool.next_seq(), 5);
    let stats = spool.stats();
    assert_eq!((stats.corrupt_total, stats.dropped_total), (0, 0));
    assert!(stats.durable);
}

#[test]
fn inspection_reads_without_changing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    for i in 0..3 {
        spool.push(batch(i, 2));
    }
    let before = segment_files(dir.path());
    let inspection = inspect(dir.path()).unwrap();
    assert_eq!(inspection.spool_id, Some(spool.spool_id()));
    assert_eq!(
        inspection.batches.iter().map(|b| b.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(inspection.damaged, 0);
    assert_eq!(segment_files(dir.path()), before);
    assert!(inspect(&dir.path().join("none")).is_err());
}

#[test]
fn full_acknowledged_segments_are_replaced_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB bound: 4 KiB segments.
    let spool = Spool::open(dir.path(), 64 << 10);
    for i in 0..40 {
        let seq = spool.push(batch(i, 20));
        spool.ack_through(seq);
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(spool.stats().bytes < 8 << 10);
    drop(spool);
    let spool = Spool::open(dir.path(), 64 << 10);
    assert_eq!(spool.next_seq(), 41);
}

#[test]
fn a_torn_tail_is_skipped_counted_and_its_numbers_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    for i in 0..3 {
        spool.push(batch(i, 5));
    }
    drop(spool);
    let file = segment_files(dir.path()).pop().unwrap();
    // Killed in the middle of writing a fourth record.
    let mut torn = RECORD_MAGIC.to_vec();
    torn.extend_from_slice(&500u32.to_le_bytes());
    torn.extend_from_slice(&4u64.to_le_bytes());
    torn.extend_from_slice(&[7; 10]);
    OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(&torn)
        .unwrap();

    let spool = Spool::open(dir.path(), 64 << 10);
    assert_eq!(seqs(&spool), [1, 2, 3]);
    assert_eq!(spool.stats().corrupt_total, 1);
    // Record 4 may have reached the collector before the kill.
    let next = spool.push(batch(5, 1));
    assert!(next > 4, "{next}");
    // The damaged segment is not appended to; a new one took over.
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(seqs(&spool), [1, 2, 3, next]);
}

#[test]
fn a_corrupt_record_in_the_middle_is_skipped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    let originals: Vec<Batch> = (0..3)
        .map(|i| {
            spool.push(batch(i, 5));
            contents(&spool).pop().unwrap()
        })
        .collect();
    drop(spool);
    let file = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let record_len = (bytes.len() - SEGMENT_HEADER) / 3;
    // A bad byte in the second record's payload.
    bytes[SEGMENT_HEADER + record_len + RECORD_HEADER + 3] ^= 0xff;
    fs::write(&file, &bytes).unwrap();

    let spool = Spool::open(dir.path(), 64 << 10);
    let got = contents(&spool);
    assert_eq!(got, [originals[0].clone(), originals[2].clone()]);
    assert_eq!(spool.stats().corrupt_total, 1);
    assert_eq!(spool.push(batch(7, 1)), 4);
}

#[test]
fn damage_found_when_reading_back_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    spool.push(batch(1, 5));
    spool.push(batch(2, 5));
    let file = segment_files(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    bytes[SEGMENT_HEADER + RECORD_HEADER + 2] ^= 0x55;
    fs::write(&file, &bytes).unwrap();
    // Batch 2 is the recent one, served from memory; batch 1 is read back.
    assert_eq!(seqs(&spool), [2]);
    assert_eq!(spool.stats().corrupt_total, 1);
}

#[test]
fn damaged_newest_header_does_not_reuse_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    let id = spool.spool_id();
    // Small segments: several files.
    for i in 0..30 {
        spool.push(batch(i, 30));
    }
    drop(spool);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let newest = files.last().unwrap();
    let mut bytes = fs::read(newest).unwrap();
    bytes[9] ^= 1;
    fs::write(newest, &bytes).unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    assert_eq!(spool.spool_id(), id);
    assert!(spool.next_seq() > 30);
    assert!(spool.stats().corrupt_total >= 1);
    // Every header damaged: a new spool, which the collector tells apart.
    drop(spool);
    for file in segment_files(dir.path()) {
        fs::write(&file, b"garbage").unwrap();
    }
    let spool = Spool::open(dir.path(), 64 << 10);
    assert_ne!(spool.spool_id(), id);
    assert!(spool.is_empty());
}

#[test]
fn full_spool_drops_the_oldest_and_reports_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 << 10;
    let spool = Spool::open(dir.path(), max);
    for i in 0..200 {
        spool.push(batch(i, 40));
    }
    let stats = spool.stats();
    assert!(stats.bytes <= max, "{stats:?}");
    assert!(stats.dropped_total > 0);
    assert_eq!(stats.dropped_total + stats.batches, 200);
    let present = seqs(&spool);
    assert_eq!(*present.last().unwrap(), 200);
    assert_eq!(present[0], stats.dropped_total + 1, "oldest dropped first");
    // The newest batch carries the running count.
    let newest = contents(&spool).pop().unwrap();
    assert!(newest.dropped_batches_total > 0);
    assert!(newest.dropped_batches_total <= stats.dropped_total);
}

#[test]
fn a_full_disk_keeps_batches_in_memory_until_it_can_write_again() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    spool.push(batch(1, 5));
    // The kernel's own "no space left on device", for this one write.
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    let key = spool.lock().active.unwrap();
    let file = |spool: &Spool, f| {
        std::mem::replace(&mut spool.lock().segments.get_mut(&key).unwrap().file, f)
    };
    let segment = file(&spool, full);
    let in_memory = spool.push(batch(2, 5));
    file(&spool, segment);
    let stats = spool.stats();
    assert_eq!(stats.write_errors_total, 1);
    assert!(!stats.durable);
    assert_eq!(seqs(&spool), [1, in_memory]);
    // The next batch finds the directory writable: a new segment.
    spool.push(batch(3, 5));
    assert!(spool.stats().durable);
    assert_eq!(seqs(&spool), [1, 2, 3]);
    spool.ack_through(3);
    // The segment the write failed in is deleted once acknowledged.
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn an_unusable_directory_keeps_the_agent_running_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be: unusable even for root.
    let path = dir.path().join("spool");
    fs::write(&path, b"not a directory").unwrap();
    let spool = Spool::open(&path, 64 << 10);
    assert!(!spool.stats().durable);
    assert_eq!(spool.push(batch(1, 3)), 1);
    assert_eq!(spool.push(batch(2, 3)), 2);
    assert!(spool.stats().write_errors_total >= 1);
    assert_eq!(seqs(&spool), [1, 2]);
    spool.ack_through(1);
    assert_eq!(seqs(&spool), [2]);
    // Bounded in memory too.
    for i in 0..2000 {
        spool.push(batch(i, 40));
    }
    assert!(spool.stats().bytes <= 64 << 10);
}

#[test]
fn backlog_is_coalesced_in_order_within_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20);
    for i in 0..10 {
        let mut b = batch(i, 2);
        b.processes.push(ProcessSnapshot {
            timestamp_ms: i as i64,
            processes: vec![ProcessInfo::default()],
        });
        spool.push(b);
    }
    let four: usize = contents(&spool)[..4].iter().map(|b| b.encoded_len()).sum();
    let merged = spool.batch_after(0, four).unwrap();
    assert_eq!(merged.seq, 4, "four batches fit");
    // Tags 0..3 by i % 3: three series, joined in time order.
    assert_eq!(merged.series.len(), 3);
    let tag0 = &merged.series[0];
    assert_eq!(tag0.timestamps_ms, [0, 1, 3000, 3001]);
    assert_eq!(merged.processes.len(), 4);
    let rest = spool.batch_after(4, 1 << 20).unwrap();
    assert_eq!(rest.seq, 10);
    assert_eq!(rest.processes.len(), 6);
    // A single batch larger than the size still goes, alone.
    assert_eq!(spool.batch_after(0, 1).unwrap().seq, 1);
}

#[test]
fn a_backlog_message_is_sized_by_its_spooled_batches() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20);
    for i in 0..6 {
        spool.push(batch(i, 2));
    }
    let sizes: Vec<usize> = contents(&spool).iter().map(|b| b.encoded_len()).collect();
    // One batch: its size is exactly its encoding.
    let (one, size) = spool.sized_batch_after(0, 0).unwrap();
    assert_eq!((one.seq, size), (1, sizes[0]));
    assert_eq!(size, one.encoded_len());
    // Coalesced: the spooled batches' sum, never less than the message.
    let (merged, size) = spool.sized_batch_after(2, 1 << 20).unwrap();
    assert_eq!(merged.seq, 6);
    assert_eq!(size, sizes[2..].iter().sum::<usize>());
    assert!(
        merged.encoded_len() <= size,
        "{} > {size}",
        merged.encoded_len()
    );
    assert!(spool.sized_batch_after(6, 1 << 20).is_none());
}

#[test]
fn skipping_past_a_lost_end_continues_after_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 << 10);
    spool.push(batch(1, 1));
    spool.push(batch(2, 1));
    spool.skip_past(1);
    assert_eq!(spool.next_seq(), 3, "nothing to skip");
    spool.skip_past(10);
    assert_eq!(spool.next_seq(), 11);
    assert!(spool.is_empty());
    assert_eq!(spool.stats().dropped_total, 2);
    drop(spool);
    assert_eq!(Spool::open(dir.path(), 64 << 10).next_seq(), 11);
}

#[test]
fn a_welcome_below_what_another_collector_acknowledged_sends_what_is_left() {
    // After a failover: collector B acknowledged 1 to 6, collector A's
    // Welcome says it holds only 2. The session with A does what
    // `shipper` does with a Welcome: nothing is skipped or dropped, and
    // A is sent 7 and up, the batches still spooled.
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20);
    for i in 0..9 {
        spool.push(batch(i, 1));
    }
    spool.ack_through(6);
    spool.skip_past(2);
    spool.ack_through(2);
    assert_eq!(spool.next_seq(), 10, "the numbering goes on");
    assert_eq!(spool.stats().dropped_total, 0);
    assert_eq!(seqs(&spool), [7, 8, 9]);
    assert_eq!(spool.batch_after(2, 1 << 20).unwrap().seq, 9);
    assert_eq!(spool.batch_after(2, 0).unwrap().seq, 7);
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Ack(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..120).prop_map(Op::Push),
        2 => (0usize..100).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Against a model: batches come back in order and unchanged; an
    /// acknowledged batch never comes back in the same run; a missing
    /// unacknowledged batch was dropped, counted, and older than every
    /// remaining one; the spool stays within its bound; the id and the
    /// numbering survive reopening.
    #[test]
    fn behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let max = 16 << 10;
        let mut spool = Spool::open(dir.path(), max);
        let id = spool.spool_id();
        let mut pushed: BTreeMap<u64, Batch> = BTreeMap::new();
        let mut acked = 0u64;
        let mut acked_this_run = 0u64;
        let mut dropped_before = 0u64;
        let mut known_missing = 0u64;
        for op in ops {
            match op {
                Op::Push(points) => {
                    let expected = spool.next_seq();
                    let seq = spool.push(batch(pushed.len() as u64, points));
                    prop_assert_eq!(seq, expected);
                    // Record what was stored, with its seq and drop count.
                    let stored = spool.batch_after(seq - 1, 0).unwrap();
                    prop_assert_eq!(stored.seq, seq);
                    pushed.insert(seq, stored);
                }
                Op::Ack(pick) => {
                    let present = seqs(&spool);
                    if !present.is_empty() {
                        let seq = present[pick % present.len()];
                        spool.ack_through(seq);
                        acked = acked.max(seq);
                        acked_this_run = acked_this_run.max(seq);
                    }
                }
                Op::Reopen => {
                    drop(spool);
                    spool = Spool::open(dir.path(), max);
                    prop_assert_eq!(spool.spool_id(), id);
                    if let Some(last) = pushed.keys().next_back() {
                        prop_assert!(spool.next_seq() > *last);
                    }
                    acked_this_run = 0;
                    dropped_before = known_missing;
                }
            }
            let present = contents(&spool);
            let mut last = 0;
            for b in &present {
                prop_assert!(b.seq > last, "out of order");
                last = b.seq;
                prop_assert_eq!(Some(b), pushed.get(&b.seq), "changed");
                prop_assert!(b.seq > acked_this_run, "acknowledged batch came back");
            }
            let present_seqs: Vec<u64> = present.iter().map(|b| b.seq).collect();
            let missing: Vec<u64> = pushed.keys().copied().filter(|s| *s > acked && !present_seqs.contains(s)).collect();
            if let (Some(newest_missing), Some(oldest_left)) = (missing.last(), present_seqs.iter().find(|s| **s > acked)) {
                prop_assert!(newest_missing < oldest_left, "dropped {newest_missing} but kept {oldest_left}");
            }
            known_missing = known_missing.max(missing.len() as u64);
            let stats = spool.stats();
            prop_assert!(dropped_before + stats.dropped_total >= missing.len() as u64, "missing {} dropped {}+{}", missing.len(), dropped_before, stats.dropped_total);
            prop_assert!(stats.bytes <= max || stats.batches <= 1, "{:?}", stats);
            prop_assert_eq!(stats.corrupt_total, 0);
        }
    }

    /// Damage anywhere never panics, never returns a changed batch, and
    /// never lets the numbering go back under the same spool id.
    #[test]
    fn survives_any_damage(
        pushes in 1usize..30,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..=255), 0..6),
        truncate in prop::option::of((any::<prop::sample::Index>(), any::<prop::sample::Index>())),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 16 << 10);
        let id = spool.spool_id();
        let mut pushed = BTreeMap::new();
        for i in 0..pushes {
            let seq = spool.push(batch(i as u64, 1 + i * 7 % 50));
            pushed.insert(seq, spool.batch_after(seq - 1, 0).unwrap());
        }
        drop(spool);
        let files = segment_files(dir.path());
        for (file, at, mask) in flips {
            let file = file.get(&files);
            let mut bytes = fs::read(file).unwrap();
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
            fs::write(file, &bytes).unwrap();
        }
        if let Some((file, at)) = truncate {
            let file = file.get(&files);
            let len = fs::metadata(file).unwrap().len() as usize;
            OpenOptions::new().write(true).open(file).unwrap().set_len(at.index(len + 1) as u64).unwrap();
        }
        let spool = Spool::open(dir.path(), 16 << 10);
        let mut last = 0;
        for b in contents(&spool) {
            prop_assert!(b.seq > last);
            last = b.seq;
            prop_assert_eq!(Some(&b), pushed.get(&b.seq));
        }
        // A truncated file is what a power failure leaves: the records
        // lost with it are beyond the spool's knowledge (the collector's
        // Welcome covers that case, see `skip_past`).
        if spool.spool_id() == id && truncate.is_none() {
            prop_assert!(spool.next_seq() > pushes as u64, "numbering went back to {}", spool.next_seq());
        }
        // Usable afterwards.
        let seq = spool.push(batch(99, 3));
        prop_assert_eq!(spool.batch_after(seq - 1, 0).map(|b| b.seq), Some(seq));
    }
}
