//! The series index, in memory: ids to keys, and each metric's series in
//! key order and by label value (postings), so that selecting series
//! looks at the series a matcher names rather than at every series of the
//! metric, and answers in key order without sorting them.
//!
//! Built at open from the series definitions (`store::read_index`) and
//! kept up to date as series are created (`Inner::resolve`). Series are
//! never deleted: retention deletes their chunks and latest values, not
//! their definitions, so nothing leaves the index.
//!
//! Keys are kept as [`Key`]s: a series' strings in one slice, each string
//! held once per store (interned), since a fleet repeats the same metric
//! names, label names and values (a host's name, a CPU's number) across
//! its series. [`SeriesKey`]s, with strings of their own, are made only
//! for the callers that ask for them.

use crate::head::IdMap;
use crate::model::{HOST_LABEL, Label, Matcher, SeriesKey};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// A series' key as the store keeps it in memory: the metric, then each
/// label's name and value in the key's order (sorted by name), the strings
/// shared with every other key holding them. Ordered as the
/// [`SeriesKey`] it stands for (each label is two strings, so comparing
/// the flat slices compares the labels in turn, a shorter prefix first).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key(Arc<[Arc<str>]>);

impl Key {
    pub(crate) fn metric(&self) -> &str {
        &self.0[0]
    }

    /// The labels, `host` among them, as (name, value) in key order.
    pub(crate) fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0[1..]
            .chunks_exact(2)
            .map(|pair| (&*pair[0], &*pair[1]))
    }

    pub(crate) fn label_count(&self) -> usize {
        (self.0.len() - 1) / 2
    }

    /// Value of label `name`, if set (a binary search: names are sorted).
    pub(crate) fn label(&self, name: &str) -> Option<&str> {
        let pairs = &self.0[1..];
        let (mut low, mut high) = (0, pairs.len() / 2);
        while low < high {
            let mid = low + (high - low) / 2;
            match (*pairs[2 * mid]).cmp(name) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Some(&pairs[2 * mid + 1]),
            }
        }
        None
    }

    /// The host the series belongs to.
    pub(crate) fn host(&self) -> &str {
        self.label(HOST_LABEL).unwrap_or_default()
    }

    /// The key with strings of its own, as the store's API gives it.
    pub(crate) fn to_series_key(&self) -> SeriesKey {
        SeriesKey {
            metric: self.metric().to_owned(),
            labels: self.labels().map(|(n, v)| Label::new(n, v)).collect(),
        }
    }
}

impl fmt::Display for Key {
    /// As [`SeriesKey`]'s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric())?;
        f.write_str("{")?;
        for (i, (name, value)) in self.labels().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{name}={value:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The strings of the index's keys, each held once. Strings are never
/// removed, as series are not: a string no key holds any more is not
/// possible.
#[derive(Default)]
struct Strings(HashSet<Arc<str>>);

impl Strings {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(held) = self.0.get(s) {
            return held.clone();
        }
        let held: Arc<str> = Arc::from(s);
        self.0.insert(held.clone());
        held
    }
}

/// The series index: ids to keys, metrics to their series.
#[derive(Default)]
pub(crate) struct Index {
    pub(crate) keys: IdMap<Key>,
    pub(crate) by_metric: HashMap<String, MetricSeries>,
    pub(crate) next_id: u64,
    strings: Strings,
}

impl Index {
    /// `key` with its strings interned.
    fn intern(&mut self, key: &SeriesKey) -> Key {
        let mut parts = Vec::with_capacity(1 + 2 * key.labels.len());
        parts.push(self.strings.intern(&key.metric));
        for label in &key.labels {
            parts.push(self.strings.intern(&label.name));
            parts.push(self.strings.intern(&label.value));
        }
        Key(parts.into())
    }

    /// Adds series `id`, leaving it out of its metric's key order until
    /// [`Index::order_all`]: for building the index at open, where ordering
    /// every metric once is cheaper than ordering as series come. Returns
    /// the key as the index holds it, to share.
    pub(crate) fn insert(&mut self, id: u64, key: &SeriesKey) -> Key {
        let key = self.intern(key);
        match self.by_metric.get_mut(key.metric()) {
            Some(series) => series.push(id, key.clone()),
            None => {
                let mut series = MetricSeries::default();
                series.push(id, key.clone());
                self.by_metric.insert(key.metric().to_owned(), series);
            }
        }
        self.keys.insert(id, key.clone());
        self.next_id = self.next_id.max(id + 1);
        key
    }

    /// Adds a series just created, ordering its metric's unordered series
    /// once there are enough of them (see [`MetricSeries::order_if_due`]).
    pub(crate) fn insert_created(&mut self, id: u64, key: &SeriesKey) -> Key {
        let key = self.insert(id, key);
        if let Some(series) = self.by_metric.get_mut(key.metric()) {
            series.order_if_due();
        }
        key
    }

    /// Puts every series in its metric's key order.
    pub(crate) fn order_all(&mut self) {
        for series in self.by_metric.values_mut() {
            series.order();
        }
    }

    /// Series of `metric` matching every matcher, sorted by key.
    pub(crate) fn select(&self, metric: &str, matchers: &[Matcher]) -> Vec<(Arc<SeriesKey>, u64)> {
        self.by_metric
            .get(metric)
            .map_or_else(Vec::new, |series| series.select(matchers))
    }

    /// The key of series `id`, if known, with strings of its own.
    pub(crate) fn series_key(&self, id: u64) -> Option<Arc<SeriesKey>> {
        self.keys.get(&id).map(|k| Arc::new(k.to_series_key()))
    }

    /// How many series the index holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// One metric's series. Each has a place, its position in `ids` (the
/// order series were added in); postings and the key order hold places.
#[derive(Default)]
pub(crate) struct MetricSeries {
    ids: Vec<u64>,
    /// Beside `ids`.
    keys: Vec<Key>,
    /// Places `0..ordered.len()` in key order. The places after those are
    /// of series added since it was built: "unordered", sorted when
    /// selected and merged in by [`MetricSeries::order`].
    ordered: Vec<usize>,
    /// Beside places `0..ordered.len()`: each one's index in `ordered`.
    rank: Vec<usize>,
    /// Label name, then value: the places of the series with that value,
    /// ascending (a new series' place is the highest, so it is pushed).
    postings: HashMap<Arc<str>, HashMap<Arc<str>, Vec<usize>>>,
}

/// Unordered series a metric keeps before merging them into its order,
/// beyond a 64th of its ordered ones: a selection sorts at most these,
/// and a merge, which rewrites the order, comes once per that many new
/// series.
const MIN_UNORDERED: usize = 64;

impl MetricSeries {
    /// Whether the metric has no series.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn push(&mut self, id: u64, key: Key) {
        let place = self.ids.len();
        for pair in key.0[1..].chunks_exact(2) {
            let values = match self.postings.get_mut(&pair[0]) {
                Some(values) => values,
                None => self.postings.entry(pair[0].clone()).or_default(),
            };
            match values.get_mut(&pair[1]) {
                Some(places) => places.push(place),
                None => {
                    values.insert(pair[1].clone(), vec![place]);
                }
            }
        }
        self.ids.push(id);
        self.keys.push(key);
    }

    fn order_if_due(&mut self) {
        let unordered = self.ids.len() - self.ordered.len();
        if unordered > MIN_UNORDERED + self.ordered.len() / 64 {
            self.order();
        }
    }

    /// Merges the unordered series into the key order.
    fn order(&mut self) {
        if self.ordered.len() == self.ids.len() {
            return;
        }
        let unordered: Vec<usize> = (self.ordered.len()..self.ids.len()).collect();
        self.ordered = self.merged(&self.ordered, unordered);
        self.rank = vec![0; self.ordered.len()];
        for (rank, &place) in self.ordered.iter().enumerate() {
            self.rank[place] = rank;
        }
    }

    /// The series matching every matcher, sorted by key.
    fn select(&self, matchers: &[Matcher]) -> Vec<(Arc<SeriesKey>, u64)> {
        let places = match self.matching(matchers) {
            Some(places) => {
                let split = places.partition_point(|&p| p < self.ordered.len());
                let mut ranks: Vec<usize> = places[..split].iter().map(|&p| self.rank[p]).collect();
                ranks.sort_unstable();
                let ordered: Vec<usize> = ranks.into_iter().map(|r| self.ordered[r]).collect();
                self.merged(&ordered, places[split..].to_vec())
            }
            None => {
                let unordered = (self.ordered.len()..self.ids.len()).collect();
                self.merged(&self.ordered, unordered)
            }
        };
        places
            .into_iter()
            .map(|p| (Arc::new(self.keys[p].to_series_key()), self.ids[p]))
            .collect()
    }

    /// `ordered` (places in key order) with the places of `unordered`
    /// sorted and merged in, each found by a binary search.
    fn merged(&self, ordered: &[usize], mut unordered: Vec<usize>) -> Vec<usize> {
        if unordered.is_empty() {
            return ordered.to_vec();
        }
        let cmp = |a: &usize, b: &usize| self.keys[*a].cmp(&self.keys[*b]);
        unordered.sort_unstable_by(cmp);
        let mut out = Vec::with_capacity(ordered.len() + unordered.len());
        let mut rest = ordered;
        for place in unordered {
            let at = rest.partition_point(|p| cmp(p, &place) == Ordering::Less);
            out.extend_from_slice(&rest[..at]);
            out.push(place);
            rest = &rest[at..];
        }
        out.extend_from_slice(rest);
        out
    }

    /// The places of the series matching every matcher, ascending; `None`
    /// when every series matches (no matchers, or none that excludes one).
    ///
    /// A matcher that does not match the empty string (an absent label)
    /// includes the series with a value it matches; one that does excludes
    /// the series with a value it does not match. Either way a regex is
    /// tried once per distinct value, not once per series.
    fn matching(&self, matchers: &[Matcher]) -> Option<Vec<usize>> {
        let mut included: Option<Vec<usize>> = None;
        let mut excluded: Vec<usize> = Vec::new();
        for matcher in matchers {
            let values = self.postings.get(matcher.name());
            let places = match matcher {
                Matcher::Equal(_, v) | Matcher::NotEqual(_, v) if !v.is_empty() => values
                    .and_then(|values| values.get(v.as_str()))
                    .cloned()
                    .unwrap_or_default(),
                _ => {
                    let absent_matches = matcher.matches_value(None);
                    let mut places: Vec<usize> = values
                        .into_iter()
                        .flatten()
                        .filter(|(v, _)| matcher.matches_value(Some(v)) != absent_matches)
                        .flat_map(|(_, places)| places.iter().copied())
                        .collect();
                    // A series has one value per label: no place twice.
                    places.sort_unstable();
                    places
                }
            };
            if matcher.matches_value(None) {
                excluded.extend(places);
            } else {
                let places = match included {
                    Some(before) => intersection(&before, &places),
                    None => places,
                };
                if places.is_empty() {
                    return Some(places);
                }
                included = Some(places);
            }
        }
        if excluded.is_empty() {
            return included;
        }
        excluded.sort_unstable();
        let included = included.unwrap_or_else(|| (0..self.ids.len()).collect());
        Some(difference(&included, &excluded))
    }
}

/// The places in both ascending lists.
fn intersection(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut rest = large;
    let mut out = Vec::with_capacity(small.len());
    for &place in small {
        let at = rest.partition_point(|&p| p < place);
        if rest.get(at) == Some(&place) {
            out.push(place);
        }
        rest = &rest[at..];
    }
    out
}

/// The places of ascending `a` not in ascending `b` (which may repeat one).
fn difference(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut rest = b;
    let mut out = Vec::with_capacity(a.len());
    for &place in a {
        let at = rest.partition_point(|&p| p < place);
        rest = &rest[at..];
        if rest.first() != Some(&place) {
            out.push(place);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every series of `keys` (id = position + 1) of `metric` matching
    /// every matcher, by looking at each: what the index must answer.
    fn brute_force(
        keys: &[SeriesKey],
        metric: &str,
        matchers: &[Matcher],
    ) -> Vec<(SeriesKey, u64)> {
        let mut out: Vec<(SeriesKey, u64)> = keys
            .iter()
            .zip(1..)
            .filter(|(k, _)| k.metric == metric && matchers.iter().all(|m| m.matches(k)))
            .map(|(k, id)| (k.clone(), id))
            .collect();
        out.sort();
        out
    }

    fn key_strategy() -> impl Strategy<Value = SeriesKey> {
        let label = (
            prop::sample::select(vec!["cpu", "mode", "A", "z"]),
            prop::sample::select(vec!["0", "1", "total", "idle", "x"]),
        );
        (
            prop::sample::select(vec!["m", "n"]),
            0..4u32,
            prop::collection::vec(label, 0..4),
        )
            .prop_filter_map("duplicate label names", |(metric, host, labels)| {
                let labels: Vec<Label> = labels.iter().map(|(n, v)| Label::new(*n, *v)).collect();
                SeriesKey::for_host(&format!("h{host}"), metric, &labels).ok()
            })
    }

    fn matcher_strategy() -> impl Strategy<Value = Matcher> {
        let name = prop::sample::select(vec!["cpu", "mode", "A", "host", "absent", "__name__"]);
        let value = prop::sample::select(vec!["", "0", "total", "h1", "x", "m"]);
        let pattern = prop::sample::select(vec!["", ".*", ".+", "t.*", "0|1", "h[12]", "|x"]);
        prop_oneof![
            (name.clone(), value.clone()).prop_map(|(n, v)| Matcher::Equal(n.into(), v.into())),
            (name.clone(), value).prop_map(|(n, v)| Matcher::NotEqual(n.into(), v.into())),
            (name, pattern, any::<bool>()).prop_map(|(n, p, negate)| {
                Matcher::regex(n, p, negate).expect("the patterns compile")
            }),
        ]
    }

    proptest! {
        /// Built at open, then grown by creations (merged into the order
        /// or not), the index selects what looking at every series does.
        #[test]
        fn selection_agrees_with_looking_at_every_series(
            at_open in prop::collection::vec(key_strategy(), 0..40),
            created in prop::collection::vec(key_strategy(), 0..150),
            matchers in prop::collection::vec(matcher_strategy(), 0..3),
        ) {
            let mut all: Vec<SeriesKey> = Vec::new();
            let mut index = Index::default();
            // Keys are unique, as the store's `resolve` makes them.
            let mut add = |key: &SeriesKey| {
                if all.contains(key) {
                    return None;
                }
                all.push(key.clone());
                Some((all.len() as u64, key.clone()))
            };
            for key in &at_open {
                if let Some((id, key)) = add(key) {
                    index.insert(id, &key);
                }
            }
            index.order_all();
            for key in &created {
                if let Some((id, key)) = add(key) {
                    index.insert_created(id, &key);
                }
            }
            for metric in ["m", "n", "absent"] {
                let got: Vec<(SeriesKey, u64)> = index
                    .select(metric, &matchers)
                    .into_iter()
                    .map(|(k, id)| ((*k).clone(), id))
                    .collect();
                prop_assert_eq!(got, brute_force(&all, metric, &matchers));
            }
        }
    }

    proptest! {
        /// An interned key stands for its series key: same order, labels,
        /// text and hash (the head's lookups hash either), and the same
        /// key back.
        #[test]
        fn interned_keys_are_their_series_keys(
            a in key_strategy(),
            b in key_strategy(),
        ) {
            let mut index = Index::default();
            let (ka, kb) = (index.insert(1, &a), index.insert(2, &b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(ka.to_series_key(), a.clone());
            prop_assert_eq!(ka.to_string(), a.to_string());
            prop_assert_eq!(ka.host(), a.host());
            for name in ["cpu", "mode", "A", "z", "host", "absent"] {
                prop_assert_eq!(ka.label(name), a.label(name));
            }
            let labels: Vec<Label> = a.labels.clone();
            prop_assert_eq!(
                crate::model::series_hash_of(ka.metric(), ka.labels()),
                crate::model::series_hash(&a.metric, &labels)
            );
        }
    }

    #[test]
    fn keys_share_their_strings() {
        let mut index = Index::default();
        let key = |cpu: &str| SeriesKey::for_host("h", "m", &[Label::new("cpu", cpu)]).unwrap();
        let (a, b) = (index.insert(1, &key("0")), index.insert(2, &key("1")));
        assert!(Arc::ptr_eq(&a.0[0], &b.0[0]), "the metric");
        assert!(Arc::ptr_eq(&a.0[1], &b.0[1]), "a label name");
        assert!(!Arc::ptr_eq(&a.0[2], &b.0[2]), "distinct values");
        assert_eq!(index.strings.0.len(), 6);
    }

    #[test]
    fn a_metric_orders_its_new_series_once_enough_have_come() {
        let mut index = Index::default();
        let key = |i: usize| {
            let labels = [Label::new("i", format!("{:04}", 1000 - i))];
            SeriesKey::for_host("h", "m", &labels).unwrap()
        };
        for i in 0..MIN_UNORDERED {
            index.insert_created(i as u64 + 1, &key(i));
        }
        assert!(index.by_metric["m"].ordered.is_empty(), "not due yet");
        let selected = index.select("m", &[]);
        assert!(selected.is_sorted_by(|a, b| a.0 < b.0));
        index.insert_created(MIN_UNORDERED as u64 + 1, &key(MIN_UNORDERED));
        assert_eq!(index.by_metric["m"].ordered.len(), MIN_UNORDERED + 1);
        let selected = index.select("m", &[]);
        assert!(selected.is_sorted_by(|a, b| a.0 < b.0));
        assert_eq!(selected.len(), MIN_UNORDERED + 1);
    }
}
