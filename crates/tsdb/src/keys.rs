//! The key layout of the store's main sled tree (`tsdb`), of its WAL
//! databases (their default tree: `W` and `S` keys only) and of its time
//! partitions (their default tree: `C` and `P` keys only, see `partition`).
//!
//! Every key starts with a kind byte, so each kind is one ordered range:
//! - `S` + series id: the encoded [`crate::SeriesKey`] (in a WAL database
//!   for a series created there, until the generation is deleted);
//! - `W` + group + piece: WAL frames of one commit group (see `wal`);
//! - `Q` + host + NUL + source: highest batch sequence stored (u64 BE);
//! - `M` + name: store metadata (the store's format, the next commit
//!   group, the lowest group not sealed, and `Mpart` + start for each
//!   time partition);
//! - `L` + series id: the series' newest sealed sample (time, value bits);
//! - `C` + tier + series id + start (in a partition): a chunk (tier 0 raw samples of one
//!   window, tier 2 a day of 1 h aggregates; tier 1 is not used);
//! - `P` + host + NUL + start (in a partition): a window of a host's process snapshots;
//! - `A` + group: the accept log's entry of a commit group (see `forward`);
//! - `F` + name: a forwarding destination's cursor (see `forward`).
//!
//! Numbers are big-endian and times order-preserving, so a series' chunks
//! sort by start and a range query is one ordered scan.

pub(crate) const SERIES: u8 = b'S';
pub(crate) const WAL: u8 = b'W';
pub(crate) const SEQUENCE: u8 = b'Q';
pub(crate) const META: u8 = b'M';
pub(crate) const LAST: u8 = b'L';
pub(crate) const CHUNK: u8 = b'C';
pub(crate) const SNAPSHOTS: u8 = b'P';
pub(crate) const ACCEPTED: u8 = b'A';
pub(crate) const CURSOR: u8 = b'F';

/// Raw samples, one chunk per window.
pub(crate) const TIER_RAW: u8 = 0;
/// 1 h aggregates, one chunk per day.
pub(crate) const TIER_HOUR: u8 = 2;

/// The metadata key holding the next commit group.
pub(crate) const META_NEXT_GROUP: &[u8] = b"Mnext_group";
/// The metadata key holding the lowest commit group not sealed: replay
/// starts there.
pub(crate) const META_LOW_GROUP: &[u8] = b"Mlow_group";
/// The metadata key holding the store's format (u32 BE; see `partition`).
pub(crate) const META_FORMAT: &[u8] = b"Mformat";
/// The prefix of a time partition's registration (+ its start, order
/// preserving): a registered partition whose directory is missing is
/// reported, never silently forgotten.
pub(crate) const META_PARTITION: &[u8] = b"Mpart";

/// Maps i64 to u64 so that big-endian bytes sort like the signed numbers.
pub(crate) fn order_preserving(t: i64) -> u64 {
    (t as u64) ^ (1 << 63)
}

pub(crate) fn from_order_preserving(u: u64) -> i64 {
    (u ^ (1 << 63)) as i64
}

pub(crate) fn series(id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = SERIES;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

pub(crate) fn last(id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = LAST;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// A series' newest sealed sample as an `L` value.
pub(crate) fn encode_last(p: crate::model::Point) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&p.t_ms.to_be_bytes());
    value[8..].copy_from_slice(&p.value.to_bits().to_be_bytes());
    value
}

pub(crate) fn decode_last(value: &[u8]) -> Option<crate::model::Point> {
    let t = value.get(..8)?.try_into().ok().map(i64::from_be_bytes)?;
    let v = value.get(8..16)?.try_into().ok().map(u64::from_be_bytes)?;
    (value.len() == 16).then_some(crate::model::Point {
        t_ms: t,
        value: f64::from_bits(v),
    })
}

pub(crate) fn wal(group: u64, piece: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = WAL;
    key[1..9].copy_from_slice(&group.to_be_bytes());
    key[9..].copy_from_slice(&piece.to_be_bytes());
    key
}

/// The first WAL key of `group`.
pub(crate) fn wal_start(group: u64) -> [u8; 13] {
    wal(group, 0)
}

pub(crate) fn sequence(host: &str, source: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 10);
    key.push(SEQUENCE);
    key.extend_from_slice(host.as_bytes());
    key.push(0);
    key.extend_from_slice(&source.to_be_bytes());
    key
}

pub(crate) fn chunk(tier: u8, id: u64, start: i64) -> [u8; 18] {
    let mut key = [0u8; 18];
    key[0] = CHUNK;
    key[1] = tier;
    key[2..10].copy_from_slice(&id.to_be_bytes());
    key[10..].copy_from_slice(&order_preserving(start).to_be_bytes());
    key
}

/// (tier, series id, start) of a chunk key.
pub(crate) fn parse_chunk(key: &[u8]) -> Option<(u8, u64, i64)> {
    if key.len() != 18 || key[0] != CHUNK {
        return None;
    }
    let id = u64::from_be_bytes(key[2..10].try_into().ok()?);
    let start = u64::from_be_bytes(key[10..18].try_into().ok()?);
    Some((key[1], id, from_order_preserving(start)))
}

pub(crate) fn snapshots(host: &str, start: i64) -> Vec<u8> {
    let mut key = snapshots_prefix(host);
    key.extend_from_slice(&order_preserving(start).to_be_bytes());
    key
}

pub(crate) fn snapshots_prefix(host: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(host.len() + 10);
    key.push(SNAPSHOTS);
    key.extend_from_slice(host.as_bytes());
    key.push(0);
    key
}

/// (host, start) of a snapshot block key.
pub(crate) fn parse_snapshots(key: &[u8]) -> Option<(&str, i64)> {
    if key.len() < 10 || key[0] != SNAPSHOTS || key[key.len() - 9] != 0 {
        return None;
    }
    let host = std::str::from_utf8(&key[1..key.len() - 9]).ok()?;
    let start = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    Some((host, from_order_preserving(start)))
}

/// (host, source) of a sequence key.
pub(crate) fn parse_sequence(key: &[u8]) -> Option<(&str, u64)> {
    if key.len() < 10 || key[0] != SEQUENCE || key[key.len() - 9] != 0 {
        return None;
    }
    let host = std::str::from_utf8(&key[1..key.len() - 9]).ok()?;
    let source = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    Some((host, source))
}

/// Group number of a WAL key.
pub(crate) fn parse_wal(key: &[u8]) -> Option<u64> {
    if key.len() != 13 || key[0] != WAL {
        return None;
    }
    Some(u64::from_be_bytes(key[1..9].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_and_parse_back() {
        assert!(chunk(0, 1, -5) < chunk(0, 1, 0));
        assert!(chunk(0, 1, 0) < chunk(0, 1, 5));
        assert!(chunk(0, 1, i64::MAX) < chunk(0, 2, i64::MIN));
        assert!(chunk(0, u64::MAX, 0) < chunk(1, 0, 0));
        assert_eq!(parse_chunk(&chunk(2, 7, -9)), Some((2, 7, -9)));
        assert_eq!(parse_snapshots(&snapshots("web", 42)), Some(("web", 42)));
        assert_eq!(parse_sequence(&sequence("web", 3)), Some(("web", 3)));
        assert_eq!(parse_wal(&wal(9, 2)), Some(9));
        assert!(wal(1, u32::MAX) < wal(2, 0));
    }
}
