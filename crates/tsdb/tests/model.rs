//! A model of the whole store: random appends (with replays, late, bad and
//! duplicate samples), maintenance passes, forced sealing, clock jumps and
//! reopens, checked against a `BTreeMap` after every step.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hostwatch_tsdb::{Aggregation, Batch, Label, Matcher, Options, Point, SeriesInput, Store};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const HOSTS: usize = 2;
const SERIES: usize = 4;
const LIMIT: usize = 3;
const TOLERANCE: i64 = 10 * MINUTE;

#[derive(Debug, Clone)]
enum Op {
    Append {
        host: usize,
        /// A replay of an earlier sequence instead of the next one.
        replay: bool,
        series: Vec<(usize, Vec<(i64, f64)>)>,
    },
    Maintain,
    SealAll,
    Reopen,
    /// Moves the clock forward by this many minutes.
    Advance(i64),
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        4 => (0i64..100).prop_map(|v| v as f64),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Times in seconds after a base two hours before the midnight before
    // the clock start, so that sealing completes a day.
    let points = prop::collection::vec((0i64..4 * 3600, value()), 0..6);
    prop_oneof![
        10 => (0..HOSTS, prop::bool::weighted(0.1), prop::collection::vec((0..SERIES, points), 1..4))
            .prop_map(|(host, replay, series)| Op::Append { host, replay, series }),
        2 => Just(Op::Maintain),
        1 => Just(Op::SealAll),
        1 => Just(Op::Reopen),
        1 => (1i64..90).prop_map(Op::Advance),
    ]
}

struct Model {
    /// Most samples a series holds in one hour (`max_window_samples`).
    window_limit: usize,
    /// (host, series) -> time -> value.
    data: BTreeMap<(usize, usize), BTreeMap<i64, f64>>,
    /// Series created per host, in order.
    created: HashMap<usize, Vec<usize>>,
    seq: HashMap<usize, u64>,
}

impl Model {
    fn append(&mut self, host: usize, series: &[(usize, Vec<Point>)], now: i64) -> u64 {
        let mut stored = 0;
        // A series listed twice is one series; its samples are taken in
        // time order, the one listed first of equal times.
        let mut merged: Vec<(usize, Vec<Point>)> = Vec::new();
        for (s, points) in series {
            if points.is_empty() {
                continue;
            }
            match merged.iter_mut().find(|(m, _)| m == s) {
                Some((_, all)) => all.extend_from_slice(points),
                None => merged.push((*s, points.clone())),
            }
        }
        for (s, points) in &mut merged {
            points.sort_by_key(|p| p.t_ms);
            let (s, points) = (&*s, &*points);
            let created = self.created.entry(host).or_default();
            if !created.contains(s) {
                if created.len() >= LIMIT {
                    continue;
                }
                created.push(*s);
            }
            let data = self.data.entry((host, *s)).or_default();
            let newest = data.keys().next_back().copied();
            for p in points {
                let ok = p.value.is_finite()
                    && p.t_ms <= now + 10 * MINUTE
                    && p.t_ms >= now - 30 * 24 * HOUR
                    && newest.is_none_or(|n| p.t_ms >= n - TOLERANCE);
                if !ok {
                    continue;
                }
                let window = p.t_ms.div_euclid(HOUR) * HOUR;
                let full = data.range(window..window + HOUR).count() >= self.window_limit;
                if let std::collections::btree_map::Entry::Vacant(e) = data.entry(p.t_ms)
                    && !full
                {
                    e.insert(p.value);
                    stored += 1;
                }
            }
        }
        stored
    }
}

fn host_name(h: usize) -> String {
    format!("h{h}")
}

fn check(store: &Store, model: &Model) {
    for h in 0..HOSTS {
        let host = host_name(h);
        assert_eq!(
            store.last_seq(&host, 7).unwrap(),
            model.seq.get(&h).copied().unwrap_or(0),
            "sequence of {host}"
        );
        let matchers = [Matcher::Equal("host".into(), host.clone())];
        let mut latest = Vec::new();
        for s in 0..SERIES {
            let want: Vec<(i64, u64)> = model
                .data
                .get(&(h, s))
                .into_iter()
                .flatten()
                .map(|(t, v)| (*t, v.to_bits()))
                .collect();
            let mut m = matchers.to_vec();
            m.push(Matcher::Equal("s".into(), s.to_string()));
            let got: Vec<(i64, u64)> = store
                .range("m", &m, i64::MIN, i64::MAX)
                .unwrap()
                .into_iter()
                .flat_map(|d| d.points)
                .map(|p| (p.t_ms, p.value.to_bits()))
                .collect();
            assert_eq!(got, want, "series {host} s={s}");
            // Steps of whole hours: the 1 h tier where a day has it, raw
            // samples elsewhere.
            for agg in [Aggregation::Count, Aggregation::Max] {
                let got: Vec<(i64, f64)> = store
                    .range_step("m", &m, NOW - 48 * HOUR, NOW + 24 * HOUR, HOUR, agg)
                    .unwrap()
                    .into_iter()
                    .flat_map(|d| d.points)
                    .map(|p| (p.t_ms, p.value))
                    .collect();
                let mut hours: BTreeMap<i64, f64> = BTreeMap::new();
                for &(t, bits) in &want {
                    let v = f64::from_bits(bits);
                    let bucket = hours.entry(t.div_euclid(HOUR) * HOUR);
                    match agg {
                        Aggregation::Count => *bucket.or_default() += 1.0,
                        _ => {
                            let max = bucket.or_insert(v);
                            *max = max.max(v);
                        }
                    }
                }
                let hours: Vec<(i64, f64)> = hours.into_iter().collect();
                assert_eq!(got, hours, "{agg:?} by hour of {host} s={s}");
            }
            if let Some(&last) = want.last() {
                latest.push((s.to_string(), last));
            }
        }
        let got_latest: Vec<(String, (i64, u64))> = store
            .latest(&host)
            .unwrap()
            .into_iter()
            .map(|(k, p)| {
                (
                    k.label("s").unwrap().to_owned(),
                    (p.t_ms, p.value.to_bits()),
                )
            })
            .collect();
        assert_eq!(got_latest, latest, "latest of {host}");
    }
}

fn run(ops: Vec<Op>, window_limit: usize, partition_ms: i64) {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let opts = || Options {
        max_series_per_host: LIMIT,
        out_of_order_tolerance_ms: TOLERANCE,
        max_window_samples: window_limit,
        partition_ms,
        ..options(&clock)
    };
    let base = NOW - NOW.rem_euclid(24 * HOUR) - 2 * HOUR;
    let mut store = Some(open(dir.path(), opts()));
    let mut model = Model {
        window_limit,
        data: BTreeMap::new(),
        created: HashMap::new(),
        seq: HashMap::new(),
    };
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Append {
                host,
                replay,
                series,
            } => {
                let highest = model.seq.get(&host).copied().unwrap_or(0);
                let seq = if replay && highest > 0 {
                    highest
                } else {
                    highest + 1
                };
                let series: Vec<(usize, Vec<Point>)> = series
                    .into_iter()
                    .map(|(s, pts)| {
                        let pts = pts
                            .into_iter()
                            .map(|(t, value)| Point {
                                t_ms: base + t * 1000,
                                value,
                            })
                            .collect();
                        (s, pts)
                    })
                    .collect();
                let batch = Batch {
                    host: host_name(host),
                    source: 7,
                    seq,
                    series: series
                        .iter()
                        .map(|(s, points)| SeriesInput {
                            metric: "m".into(),
                            labels: vec![Label::new("s", s.to_string())],
                            points: points.clone(),
                        })
                        .collect(),
                    processes: vec![],
                    malformed: 0,
                };
                let outcome = s.append(&batch).unwrap();
                if seq <= highest {
                    assert!(outcome.duplicate);
                } else {
                    model.seq.insert(host, seq);
                    let stored = model.append(host, &series, clock.now());
                    assert_eq!(outcome.stored, stored, "{outcome:?}");
                }
            }
            Op::Maintain => {
                s.maintain().unwrap();
            }
            Op::SealAll => {
                s.seal_all().unwrap();
                assert_eq!(s.stats().unwrap().head_samples, 0);
            }
            Op::Reopen => {
                drop(store.take());
                store = Some(open(dir.path(), opts()));
            }
            Op::Advance(minutes) => clock.set(clock.now() + minutes * MINUTE),
        }
        check(store.as_ref().unwrap(), &model);
    }
    let store = store.unwrap();
    let verify = store.verify().unwrap();
    assert!(verify.is_clean(), "{verify:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_a_map(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, hostwatch_tsdb::MAX_WINDOW_SAMPLES, 24 * HOUR);
    }

    /// Partitions of an hour: every window in a partition of its own, a
    /// day's 1 h chunk in the partition of its last window, sealing,
    /// resealing and reads across each boundary.
    #[test]
    fn the_store_behaves_like_a_map_across_hourly_partitions(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, hostwatch_tsdb::MAX_WINDOW_SAMPLES, HOUR);
    }

    /// Windows at their limit of samples, through appends, replays,
    /// reopens (replaying the WAL) and sealing.
    #[test]
    fn full_windows_behave_like_a_map_with_a_limit(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, 3, 24 * HOUR);
    }
}
