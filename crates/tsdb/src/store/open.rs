//! Opening the store: its state read from disk, then the WAL replayed
//! into the head.

use super::apply::{Mode, Sealed};
use super::{Counters, HostEntry, Inner, bump, lock};
use crate::TsdbError;
use crate::commit::{Committer, Generation, Group};
use crate::head::{HostState, Inserts};
use crate::index::Index;
use crate::keys;
use crate::maintain::MaintenanceState;
use crate::model::SeriesKey;
use crate::options::Options;
use crate::wal::{self, WalRecord};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

/// Most threads replaying the WAL at open.
const MAX_REPLAY_THREADS: usize = 4;

impl Inner {
    /// Opens the state on disk in `dir`: the index in `db`, sealed chunks
    /// in the partitions under `dir/partitions` (a store of an older
    /// format migrated first), the WAL under `dir/wal`, replayed into the
    /// head.
    pub(crate) fn open(
        db: sled::Db,
        dir: &Path,
        options: Options,
        counters: Arc<Counters>,
        incarnation: u64,
    ) -> Result<Self, TsdbError> {
        let tree = db.open_tree("tsdb")?;
        let partitions =
            crate::partition::Partitions::open(dir, tree.clone(), &options, counters.clone())?;
        crate::partition::check_format(dir, &tree, &partitions)?;
        let wal_dir = &dir.join("wal");
        let generations = Generation::open_all(wal_dir)?;
        // Definitions of series created since the oldest WAL generation
        // are only there until it is deleted.
        let wal_trees = generations
            .iter()
            .map(|g| Ok((*g.db()?).clone()))
            .collect::<Result<Vec<_>, TsdbError>>()?;
        let index = read_index(std::iter::once(tree.clone()).chain(wal_trees), &counters)?;
        let mut hosts = hosts_of(&index);
        read_last_points(&tree, &index, &mut hosts, &counters)?;
        read_sequences(&tree, &mut hosts, &counters)?;
        let meta = |key: &[u8], default: u64| -> Result<u64, TsdbError> {
            Ok(match tree.get(key)? {
                Some(v) if v.len() == 8 => u64::from_be_bytes(v[..].try_into().unwrap_or([0; 8])),
                _ => default,
            })
        };
        let mut next_group = meta(keys::META_NEXT_GROUP, 1)?;
        let low = meta(keys::META_LOW_GROUP, 0)?;
        for g in &generations {
            if let Some(entry) = g.db()?.scan_prefix([keys::WAL]).keys().next_back()
                && let Some(last) = keys::parse_wal(&entry?)
            {
                g.last_group.store(last, Ordering::Relaxed);
                next_group = next_group.max(last + 1);
            }
        }
        let hosts = hosts
            .into_iter()
            .map(|(name, state)| {
                let entry = HostEntry {
                    state: parking_lot::Mutex::new(state),
                    ..HostEntry::default()
                };
                (name, Arc::new(entry))
            })
            .collect();
        let tails = crate::tails::Tails::new(options.read_cache_bytes);
        let inner = Inner {
            incarnation,
            commit: Committer::new(
                wal_dir,
                generations,
                next_group.max(1),
                options.accept_log.then(|| tree.clone()),
            )?,
            db,
            tree,
            options,
            index: RwLock::new(index),
            hosts: RwLock::new(hosts),
            counters,
            maintenance: Mutex::new(MaintenanceState::default()),
            partitions,
            tails,
        };
        inner.replay(low)?;
        if inner.options.accept_log {
            inner
                .commit
                .with_generations(|generations| inner.rebuild_accept_log(generations, low))?;
        }
        // Everything is durable now: the generations replay read are
        // closed, and their pages with them.
        inner.commit.close_idle()?;
        Ok(inner)
    }

    /// Replays the WAL from group `low` on into the head: every group
    /// below it is sealed, its sequences and series definitions persisted.
    /// Hosts are independent, so each of a few threads replays the frames
    /// of its share of the hosts, in WAL order.
    fn replay(&self, low: u64) -> Result<(), TsdbError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_REPLAY_THREADS);
        self.commit.with_generations(|generations| {
            let results: Vec<Result<Vec<u64>, TsdbError>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|share| {
                        scope.spawn(move || self.replay_share(generations, low, share, threads))
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join().unwrap_or_else(|_| {
                            Err(TsdbError::Failed("a WAL replay thread panicked".into()))
                        })
                    })
                    .collect()
            });
            let results = results.into_iter().collect::<Result<Vec<_>, TsdbError>>()?;
            // Every share read every value; the first one's sizes serve.
            let sizes = results.into_iter().next().unwrap_or_default();
            for (g, bytes) in generations.iter().zip(&sizes) {
                g.bytes.store(*bytes, Ordering::Relaxed);
            }
            let total = sizes.iter().sum();
            self.commit.wal_bytes.store(total, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Replays the frames of the hosts that hash to `share` of `shares`;
    /// damage that names no host is counted by share 0. Returns the bytes
    /// of the WAL values read, per generation.
    fn replay_share(
        &self,
        generations: &[Arc<Generation>],
        low: u64,
        share: usize,
        shares: usize,
    ) -> Result<Vec<u64>, TsdbError> {
        let mine = |host: Option<&str>| {
            let Some(host) = host else {
                return share == 0;
            };
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(host, &mut h);
            std::hash::Hasher::finish(&h) as usize % shares == share
        };
        let mut sealed = Sealed::default();
        let mut sizes = Vec::with_capacity(generations.len());
        for g in generations {
            let mut bytes = 0;
            for entry in g.groups_from(low)? {
                let (group, value) = entry?;
                bytes += value.len() as u64;
                let Some(group) = group else {
                    if share == 0 {
                        bump(&self.counters.corrupt_wal_frames, 1);
                    }
                    continue;
                };
                for frame in wal::frames(&value) {
                    let record = match frame {
                        Ok(frame) if !mine(frame.host()) => continue,
                        Ok(frame) => frame.decode(),
                        Err(e) if share == 0 => Err(e),
                        Err(_) => continue,
                    };
                    match record {
                        Ok(record) => self.replay_record(group, record, &mut sealed)?,
                        Err(e) => {
                            tracing::warn!(group = group.number(), error = %e, "skipping a damaged WAL frame");
                            bump(&self.counters.corrupt_wal_frames, 1);
                        }
                    }
                }
            }
            sizes.push(bytes);
        }
        Ok(sizes)
    }

    fn replay_record(
        &self,
        group: Group,
        record: WalRecord,
        sealed: &mut Sealed,
    ) -> Result<(), TsdbError> {
        bump(&self.counters.replayed_frames, 1);
        let state = self.host_or_create(&record.host)?;
        let mut state = lock(&state)?;
        state.source(record.source).replayed(record.seq);
        let now = (self.options.clock)();
        for (id, mut points) in record.series {
            if !state.has_series(id) {
                // Its definition is missing or damaged: nothing to file the samples under.
                bump(&self.counters.orphan_samples, points.len() as u64);
                continue;
            }
            bump(&self.counters.replayed_samples, points.len() as u64);
            // Appends write each series' samples sorted; a stable sort
            // keeps the order of equal times, which decides the value kept.
            points.sort_by_key(|p| p.t_ms);
            let mut ignored = Inserts::default();
            self.insert_runs(
                &mut state,
                id,
                &points,
                group,
                Mode::Replay(sealed),
                now,
                &mut ignored,
            )?;
        }
        for snapshot in &record.snapshots {
            self.insert_snapshot(
                &record.host,
                &mut state,
                snapshot,
                group,
                Mode::Replay(sealed),
                now,
            )?;
        }
        Ok(())
    }
}

/// The series id in a key of the form `prefix, id (8 bytes), ...`.
fn key_series_id(key: &[u8]) -> Option<u64> {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

/// The series definitions in `trees` (the store's, then the WAL
/// generations'); the first definition of an id wins, and one that does
/// not decode is counted.
fn read_index(
    trees: impl Iterator<Item = sled::Tree>,
    counters: &Counters,
) -> Result<Index, TsdbError> {
    let mut index = Index::default();
    index.next_id = 1;
    for tree in trees {
        for entry in tree.scan_prefix([keys::SERIES]) {
            let (key, value) = entry?;
            let id = key_series_id(&key);
            match (id, SeriesKey::decode(&value)) {
                (Some(id), _) if index.keys.contains_key(&id) => {}
                (Some(id), Ok(series)) if key.len() == 9 => {
                    index.insert(id, &series);
                }
                _ => bump(&counters.corrupt_series, 1),
            }
        }
    }
    index.order_all();
    Ok(index)
}

/// The hosts of the series in `index`, each with its series.
fn hosts_of(index: &Index) -> HashMap<String, HostState> {
    let mut hosts: HashMap<String, HostState> = HashMap::new();
    for (id, key) in &index.keys {
        let host = hosts.entry(key.host().to_owned()).or_default();
        host.add_stored(*id, key.clone());
    }
    hosts
}

/// Reads each series' newest sealed point (its `L` record) into `hosts`;
/// a record of no known series, or one that does not decode, is counted.
fn read_last_points(
    tree: &sled::Tree,
    index: &Index,
    hosts: &mut HashMap<String, HostState>,
    counters: &Counters,
) -> Result<(), TsdbError> {
    for entry in tree.scan_prefix([keys::LAST]) {
        let (key, value) = entry?;
        let series = key_series_id(&key)
            .and_then(|id| index.keys.get(&id).map(|k| (id, k)))
            .and_then(|(id, k)| Some((id, hosts.get_mut(k.host())?)));
        let restored = match (series, keys::decode_last(&value)) {
            (Some((id, host)), Some(p)) => host.restore_last(id, p),
            _ => false,
        };
        if !restored {
            bump(&counters.corrupt_series, 1);
        }
    }
    Ok(())
}

/// Reads the persisted batch sequence of each (host, source) into
/// `hosts`; a record that does not decode is counted.
fn read_sequences(
    tree: &sled::Tree,
    hosts: &mut HashMap<String, HostState>,
    counters: &Counters,
) -> Result<(), TsdbError> {
    for entry in tree.scan_prefix([keys::SEQUENCE]) {
        let (key, value) = entry?;
        match (keys::parse_sequence(&key), <[u8; 8]>::try_from(&value[..])) {
            (Some((host, source)), Ok(seq)) => {
                let seq = u64::from_be_bytes(seq);
                let state = hosts.entry(host.to_owned()).or_default();
                state.source(source).restore(seq);
            }
            _ => bump(&counters.corrupt_sequences, 1),
        }
    }
    Ok(())
}
