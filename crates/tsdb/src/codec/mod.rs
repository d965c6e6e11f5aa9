//! Sample compression: bit streams, varints, the head encoder and the
//! sealed-chunk format.
//!
//! Two encodings share the bit-level building blocks:
//! - [`HeadChunk`] holds the samples still in memory: the newest in Gorilla
//!   (VLDB 2015) as published, delta-of-delta timestamps in buckets and
//!   XOR-encoded floats, appendable one sample at a time; every
//!   [`HEAD_BLOCK_POINTS`](head::HEAD_BLOCK_POINTS) of them re-encoded as a block of the format below;
//! - [`encode_points`] writes a sealed chunk once its window is complete,
//!   so it may look at all samples first: timestamps are either "regular"
//!   (one delta) or delta-of-delta; values pick the smallest of constant,
//!   scaled integers (with the common divisor of their deltas removed, as
//!   delta or delta-of-delta), ratios of integers, decimals with the few
//!   ulps each value lies off its decimal (float sums of decimals), float32
//!   data scaled by a power of ten, and Gorilla XOR with run-length coded
//!   repeats. Integer columns are differences (deltas, delta-of-deltas or
//!   distances from the first value), zigzagged or offset by their minimum
//!   (a counter's increments); the streams are coded as runs of zeros and
//!   gamma-coded lengths, or Rice-coded with the parameter that suits them,
//!   whichever is smallest.
//!
//! Every decoder is bounds-checked and refuses, never panics on, arbitrary
//! bytes (there is a fuzz target for it).
//!
//! Layout: `bytes` (varints, the byte reader), `bits` (bit streams),
//! `ints` (integer streams, Rice codes), `xor` (XOR streams), `values` and
//! `times` (the sealed chunk's columns and blocks), `head` (the head
//! encoder).

mod bits;
mod bytes;
mod head;
mod ints;
mod times;
mod values;
mod xor;

use crate::TsdbError;
pub(crate) use bytes::{ByteReader, put_ivarint, put_str, put_uvarint, unzigzag, zigzag};
pub(crate) use head::HeadChunk;
pub(crate) use times::{
    decode_points, decode_points_through, decode_times, encode_points, encode_times,
};
pub(crate) use values::{decode_ints, decode_values, encode_ints, encode_values};

/// Most points one encoded block may claim; a larger count is corruption.
pub(crate) const MAX_BLOCK_POINTS: usize = 1 << 20;

fn corrupt(what: &str) -> TsdbError {
    TsdbError::Corrupt(what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::bits::{BitReader, BitWriter};
    use super::bytes::{ByteReader, zigzag};
    use super::head::{GorillaRun, HeadChunk};
    use super::ints::{
        Coding, IntStream, MAX_RICE_K, int_stream_bits, read_ints_coded, read_rice, rice_bits,
        write_ints_best, write_rice,
    };
    use super::times::{decode_points, decode_points_through, encode_points};
    use super::values::{
        INTS_OFFSET, INTS_RICE, VALUES_NEAR_SCALED, as_fraction, as_scaled_ints, decode_ints,
        decode_values, encode_ints, encode_values,
    };
    use super::xor::write_xor;
    use crate::model::Point;
    use proptest::prelude::*;

    fn bits(points: &[Point]) -> Vec<(i64, u64)> {
        points.iter().map(|p| (p.t_ms, p.value.to_bits())).collect()
    }

    fn round_trip(points: &[Point]) -> usize {
        let mut out = Vec::new();
        encode_points(points, &mut out);
        let back = decode_points(&mut ByteReader::new(&out)).unwrap();
        assert_eq!(bits(&back), bits(points));
        let mut head = HeadChunk::new(points[0]);
        for p in &points[1..] {
            head.push(*p);
        }
        assert_eq!(bits(&head.points()), bits(points));
        out.len()
    }

    fn deltas() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => Just(10_000i64),
            2 => 9_990i64..10_010,
            1 => 1i64..3,
            1 => 1i64..1_000_000_000,
        ]
    }

    fn values(n: usize) -> impl Strategy<Value = Vec<f64>> {
        prop_oneof![
            // Any bit pattern, NaN payloads and infinities included.
            prop::collection::vec(any::<u64>().prop_map(f64::from_bits), n),
            prop::collection::vec(
                prop_oneof![
                    Just(f64::NAN),
                    Just(-0.0),
                    Just(f64::INFINITY),
                    any::<f64>()
                ],
                n
            ),
            // Counters with resets.
            prop::collection::vec((0u64..1_000_000, prop::bool::weighted(0.05)), n).prop_map(
                |steps| {
                    let mut c = 0u64;
                    steps
                        .into_iter()
                        .map(|(d, reset)| {
                            c = if reset { d % 10 } else { c + d };
                            c as f64
                        })
                        .collect()
                }
            ),
            // Decimals, float32 percentages as ratios, constants.
            prop::collection::vec(-100_000i64..100_000, n)
                .prop_map(|v| v.into_iter().map(|x| x as f64 / 100.0).collect()),
            prop::collection::vec(0f32..100.0, n)
                .prop_map(|v| v.into_iter().map(|x| f64::from(x) / 100.0).collect()),
            // Float sums of decimals, as a minute's sum of load averages.
            prop::collection::vec(prop::collection::vec(-100_000i64..100_000, 6), n).prop_map(
                |v| v
                    .into_iter()
                    .map(|six| six.into_iter().map(|x| x as f64 / 100.0).sum())
                    .collect()
            ),
            // Ratios of ticks, as the agent computes utilizations.
            prop::collection::vec((0u64..5000, 3990u64..4010), n).prop_map(|v| v
                .into_iter()
                .map(|(a, b)| a.min(b) as f64 / b as f64)
                .collect()),
            any::<f64>().prop_map(move |v| vec![v; n]),
        ]
    }

    fn points() -> impl Strategy<Value = Vec<Point>> {
        (
            1usize..400,
            -1_000_000_000_000_000i64..1_000_000_000_000_000,
        )
            .prop_flat_map(|(n, start)| {
                (prop::collection::vec(deltas(), n), values(n)).prop_map(move |(d, v)| {
                    let mut t = start;
                    d.into_iter()
                        .zip(v)
                        .map(|(delta, value)| {
                            t += delta;
                            Point { t_ms: t, value }
                        })
                        .collect()
                })
            })
    }

    proptest! {
        #[test]
        fn chunks_and_head_chunks_round_trip_bit_exactly(points in points()) {
            round_trip(&points);
        }

        #[test]
        fn blocks_decoded_through_a_range_give_the_range_of_the_whole(
            points in points(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            da in -1i64..=1,
            db in -1i64..=1,
        ) {
            let mut out = Vec::new();
            encode_points(&points, &mut out);
            // Bounds on, just before and just after the points' times.
            let first = points[a.index(points.len())].t_ms + da;
            let last = points[b.index(points.len())].t_ms + db;
            let want: Vec<Point> = points
                .iter()
                .copied()
                .filter(|p| p.t_ms >= first && p.t_ms <= last)
                .collect();
            let kept = Point { t_ms: -7, value: 7.0 };
            let mut got = vec![kept];
            let mut r = ByteReader::new(&out);
            decode_points_through(&mut r, first, last, &mut got).unwrap();
            prop_assert!(r.is_empty(), "the reader moves past the whole block");
            prop_assert_eq!(bits(&got[..1]), bits(&[kept]));
            prop_assert_eq!(bits(&got[1..]), bits(&want));
        }

        #[test]
        fn head_chunks_read_within_a_range_give_the_range_of_the_whole(
            points in points(),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            da in -1i64..=1,
            db in -1i64..=1,
        ) {
            let mut head = HeadChunk::new(points[0]);
            for p in &points[1..] {
                head.push(*p);
            }
            // Bounds on, just before and just after the points' times,
            // so across and on block edges; empty and reversed ones too.
            let start = points[a.index(points.len())].t_ms + da;
            let end = points[b.index(points.len())].t_ms + db;
            let want: Vec<Point> = points
                .iter()
                .copied()
                .filter(|p| p.t_ms >= start && p.t_ms < end)
                .collect();
            let kept = Point { t_ms: -7, value: 7.0 };
            let mut got = vec![kept];
            head.points_within(start, end, &mut got);
            prop_assert_eq!(bits(&got[..1]), bits(&[kept]));
            prop_assert_eq!(bits(&got[1..]), bits(&want));
        }

        #[test]
        fn head_chunks_newest_before_a_time_is_the_last_read_before_it(
            points in points(),
            a in any::<prop::sample::Index>(),
            da in -1i64..=1,
        ) {
            let mut head = HeadChunk::new(points[0]);
            for p in &points[1..] {
                head.push(*p);
            }
            // On, just before and just after a point's time: across block
            // edges and the run's, before the first point and past the last.
            let end = points[a.index(points.len())].t_ms + da;
            let mut before = Vec::new();
            head.points_within(i64::MIN, end, &mut before);
            let got = head.newest_before(end);
            prop_assert_eq!(bits(&got.into_iter().collect::<Vec<_>>()), bits(&before[before.len().saturating_sub(1)..]));
        }

        #[test]
        fn rice_streams_round_trip_and_cost_what_they_claim(
            zs in prop::collection::vec(prop_oneof![0u64..64, 0u64..1_000_000, any::<u64>()], 0..200),
            k in 0u32..=MAX_RICE_K,
        ) {
            let mut w = BitWriter::default();
            write_rice(&mut w, &zs, k);
            let claimed: u64 = zs.iter().map(|&z| rice_bits(z, k)).sum();
            prop_assert_eq!(w.bit_len() as u64, claimed);
            let mut r = BitReader::new(w.bytes(), w.bit_len());
            let mut out = Vec::new();
            read_rice(&mut r, zs.len(), k, &mut out).unwrap();
            prop_assert_eq!(out, zs);
        }

        #[test]
        fn integer_streams_cost_what_they_are_counted(
            zs in prop::collection::vec(prop_oneof![Just(0u64), 0u64..64, any::<u64>()], 0..200),
        ) {
            let mut w = BitWriter::default();
            let mut stream = IntStream::new(&mut w);
            for &z in &zs {
                stream.push(z);
            }
            stream.finish();
            prop_assert_eq!(w.bit_len() as u64, int_stream_bits(&zs));
            // Read back whole, and cut short (zero runs cut at the cut).
            for take in [zs.len(), zs.len() / 2] {
                let mut r = BitReader::new(w.bytes(), w.bit_len());
                let mut out = Vec::new();
                read_ints_coded(&mut r, Coding::Gamma, zs.len(), take, &mut out).unwrap();
                prop_assert_eq!(&out[..], &zs[..take]);
            }
        }

        #[test]
        fn bit_writer_packs_like_one_bit_at_a_time(
            fields in prop::collection::vec((any::<u64>(), 0u32..=64), 0..100),
        ) {
            let mut w = BitWriter::default();
            let mut bits = Vec::new();
            for &(value, n) in &fields {
                w.write(value, n);
                bits.extend((0..n).rev().map(|i| (value >> i) & 1 == 1));
            }
            let mut expected = vec![0u8; bits.len().div_ceil(8)];
            for (i, &bit) in bits.iter().enumerate() {
                expected[i / 8] |= u8::from(bit) << (7 - i % 8);
            }
            prop_assert_eq!(w.bit_len(), bits.len());
            prop_assert_eq!(w.bytes(), &expected[..]);
        }

        #[test]
        fn integer_columns_round_trip(
            ints in prop::collection::vec(
                prop_oneof![any::<i64>(), -1000i64..1000, (1i64 << 40)..(1i64 << 40) + 1000],
                1..100,
            ),
        ) {
            let mut out = Vec::new();
            encode_ints(&ints, &mut out);
            let mut r = ByteReader::new(&out);
            prop_assert_eq!(decode_ints(&mut r, ints.len()).unwrap(), ints);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn decoders_refuse_garbage_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_points(&mut ByteReader::new(&bytes));
            let mut values = Vec::new();
            let _ = decode_values(&mut ByteReader::new(&bytes), 50, &mut values);
        }
    }

    #[test]
    fn agent_shapes_compress_well() {
        let regular = |f: &dyn Fn(i64) -> f64| -> Vec<Point> {
            (0..360)
                .map(|i| Point {
                    t_ms: 1_800_000_000_000 + i * 10_000,
                    value: f(i),
                })
                .collect()
        };
        let constant = round_trip(&regular(&|_| 16_000_000_000.0));
        assert!(constant < 24, "constant: {constant} bytes");
        let uptime = round_trip(&regular(&|i| 86_400.0 + i as f64 * 10.0));
        assert!(uptime < 24, "uptime: {uptime} bytes");
        let pages = round_trip(&regular(&|i| 8e9 + ((i * 7919) % 61 - 30) as f64 * 4096.0));
        assert!(pages < 360 * 2, "memory in pages: {pages} bytes");
        let load = round_trip(&regular(&|i| ((i * 31) % 200) as f64 / 100.0));
        assert!(load < 360 * 2, "load average: {load} bytes");
        let cpu = round_trip(&regular(&|i| {
            f64::from(((i * 7919) % 1000) as f32 / 997.0 * 100.0) / 100.0
        }));
        assert!(cpu < 360 * 4, "float32 percentages as ratios: {cpu} bytes");
        // Busy over total ticks of 4 cores, the total a little irregular.
        let ticks = |i: i64| {
            let total = 4000 + (i * 7) % 5;
            let busy = 400 + (i * 7919) % 160;
            busy as f64 / total as f64
        };
        let xor = {
            let bits: Vec<u64> = (0..360).map(|i| ticks(i).to_bits()).collect();
            let mut w = BitWriter::default();
            write_xor(&mut w, &bits, 64);
            w.bytes().len()
        };
        let ratio = round_trip(&regular(&ticks));
        assert!(ratio * 2 < xor, "ticks ratios: {ratio} bytes, XOR {xor}");
    }

    #[test]
    fn head_chunks_keep_complete_runs_in_the_sealed_format() {
        // Busy over total ticks, as the agent's CPU utilizations: noisy
        // doubles, which Gorilla's XOR codes poorly.
        let points: Vec<Point> = (0..360)
            .map(|i| Point {
                t_ms: 1_800_000_000_000 + i * 10_000,
                value: (400 + (i * 7919) % 160) as f64 / (4000 + (i * 7) % 5) as f64,
            })
            .collect();
        let mut head = HeadChunk::new(points[0]);
        let mut gorilla = GorillaRun::new(points[0]);
        for p in &points[1..] {
            head.push(*p);
            gorilla.push(*p);
        }
        assert_eq!(bits(&head.points()), bits(&points));
        assert_eq!(head.len(), 360);
        assert!(
            head.heap_bytes() * 2 < gorilla.bits.bytes().len(),
            "head {} bytes, Gorilla alone {}",
            head.heap_bytes(),
            gorilla.bits.bytes().len()
        );
    }

    /// Ranges over a head of several blocks and a run: each gives what a
    /// filter of all its samples gives, at and around every block's edges.
    #[test]
    fn head_chunks_read_within_block_edges_and_outside_them() {
        use super::head::HEAD_BLOCK_POINTS;
        let n = HEAD_BLOCK_POINTS as i64 * 3 + 10;
        let points: Vec<Point> = (0..n)
            .map(|i| Point {
                t_ms: 1_000 + i * 10,
                value: (i % 13) as f64 / 7.0,
            })
            .collect();
        let mut head = HeadChunk::new(points[0]);
        for p in &points[1..] {
            head.push(*p);
        }
        let edges: Vec<i64> = (0..=4)
            .map(|b| 1_000 + b * HEAD_BLOCK_POINTS as i64 * 10)
            .flat_map(|t| [t - 11, t - 10, t - 1, t, t + 1, t + 10])
            .chain([i64::MIN, 0, 1_000 + n * 10, i64::MAX])
            .collect();
        for &start in &edges {
            for &end in &edges {
                let want: Vec<Point> = points
                    .iter()
                    .copied()
                    .filter(|p| p.t_ms >= start && p.t_ms < end)
                    .collect();
                let mut got = Vec::new();
                head.points_within(start, end, &mut got);
                assert_eq!(bits(&got), bits(&want), "[{start}, {end})");
            }
        }
    }

    #[test]
    fn noisy_integers_take_the_rice_coding_when_it_is_smaller() {
        // A counter growing by 30,000 +- 50% a step, as context switches do.
        let mut x = 0x9e37_79b9_u64;
        let mut c = 1i64 << 30;
        let counter: Vec<i64> = (0..360)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                c += 15_000 + ((x >> 33) % 30_000) as i64;
                c
            })
            .collect();
        let mut out = Vec::new();
        encode_ints(&counter, &mut out);
        assert_ne!(out[0] & INTS_RICE, 0, "Rice-coded");
        let zs: Vec<u64> = counter.windows(2).map(|w| zigzag(w[1] - w[0])).collect();
        let mut gamma = BitWriter::default();
        let mut stream = IntStream::new(&mut gamma);
        zs.iter().for_each(|&z| stream.push(z));
        stream.finish();
        assert!(out.len() * 8 < gamma.bit_len(), "{} bytes", out.len());
        let back = decode_ints(&mut ByteReader::new(&out), counter.len()).unwrap();
        assert_eq!(back, counter);
        // Increments of 15,000 to 45,000 as distances from 15,000: no sign
        // bit, and one Rice parameter less than their zigzags need.
        assert_ne!(out[0] & INTS_OFFSET, 0, "offset by the smallest increment");
        let (_, zigzagged) = write_ints_best(&zs);
        assert!(
            out.len() * 8 + 256 < zigzagged.bit_len(),
            "{} bytes against {} bits zigzagged",
            out.len(),
            zigzagged.bit_len()
        );
    }

    #[test]
    fn float_sums_of_decimals_are_coded_as_decimals_and_ulps() {
        let sums: Vec<f64> = (0..60)
            .map(|i| {
                (0..6)
                    .map(|k| ((i * 37 + k * 11) % 300) as f64 / 100.0)
                    .sum()
            })
            .collect();
        assert!(
            as_scaled_ints(&sums, 2).is_none(),
            "some sums are inexact decimals"
        );
        let mut out = Vec::new();
        encode_values(&sums, &mut out);
        assert_eq!(out[0], VALUES_NEAR_SCALED);
        let mut back = Vec::new();
        decode_values(&mut ByteReader::new(&out), sums.len(), &mut back).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&sums));
        assert!(out.len() < 60 * 3, "{} bytes for 60 sums", out.len());
    }

    #[test]
    fn fractions_are_found_exactly() {
        for (a, b) in [
            (1u64, 3u64),
            (0, 7),
            (4000, 4001),
            (17, 1 << 20),
            (5, 1),
            (123_456, 4003),
        ] {
            let v = a as f64 / b as f64;
            let (p, q) = as_fraction(v).unwrap();
            assert_eq!((p as f64 / q as f64).to_bits(), v.to_bits(), "{a}/{b}");
            assert!(q <= b, "{a}/{b} found as {p}/{q}");
        }
        assert_eq!(as_fraction(std::f64::consts::PI), None);
        assert_eq!(as_fraction(-0.5), None);
        assert_eq!(as_fraction(-0.0), None);
        assert_eq!(as_fraction(f64::NAN), None);
    }

    #[test]
    fn irregular_intervals_and_resets_round_trip() {
        let points: Vec<Point> = [0i64, 1, 2, 10_000, 10_001, 3_600_000, 3_600_500]
            .iter()
            .zip([5.0, 6.0, 0.0, 1.0, f64::NAN, -0.0, 2.5])
            .map(|(&t_ms, value)| Point { t_ms, value })
            .collect();
        round_trip(&points);
        // Negative zero next to integers must not be taken for an integer.
        let zeros: Vec<Point> = [0.0, -0.0, 1.0, -0.0]
            .iter()
            .enumerate()
            .map(|(i, &value)| Point {
                t_ms: i as i64,
                value,
            })
            .collect();
        round_trip(&zeros);
    }
}
