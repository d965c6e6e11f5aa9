//! Range reads with a limit on the points they select: refused once over
//! it, identical to the unlimited reads within it.

mod common;

use common::*;
use hostwatch_tsdb::{Aggregation, Step, TsdbError};

#[test]
fn a_read_over_its_point_limit_is_refused_and_one_within_it_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(NOW);
    let store = open(dir.path(), options(&clock));
    // Three series of ten samples, one a second.
    let values: Vec<(i64, f64)> = (0..10)
        .map(|i| (NOW - 10_000 + i * 1_000, i as f64))
        .collect();
    for (seq, cpu) in [(1, "0"), (2, "1"), (3, "2")] {
        store
            .append(&batch("a", seq, "cpu", &[("cpu", cpu)], &values))
            .unwrap();
    }
    let (start, end) = (NOW - HOUR, NOW);
    let read = |step, max| store.range_within("cpu", &[], start, end, step, max);

    let whole = read(Step::Raw, 30).unwrap();
    assert_eq!(whole, store.range("cpu", &[], start, end).unwrap());
    assert_eq!(whole.iter().map(|s| s.points.len()).sum::<usize>(), 30);
    assert!(matches!(
        read(Step::Raw, 29),
        Err(TsdbError::TooManyPoints { limit: 29 })
    ));

    // Steps count the points they return, not the samples they fold.
    let seconds = Step::Every(1_000, Aggregation::Avg);
    assert!(matches!(
        read(seconds, 29),
        Err(TsdbError::TooManyPoints { limit: 29 })
    ));
    let minutes = Step::Every(MINUTE, Aggregation::Max);
    let folded = read(minutes, 3).unwrap();
    assert_eq!(
        folded,
        store
            .range_step("cpu", &[], start, end, MINUTE, Aggregation::Max)
            .unwrap()
    );
    assert_eq!(folded.iter().map(|s| s.points.len()).sum::<usize>(), 3);
}
