//! Query results and label sets.

use hostwatch_tsdb::{Label, Point};

/// The label holding a series' metric name.
pub(crate) const METRIC_NAME: &str = "__name__";

/// A label set, sorted by name, names unique.
pub(crate) type Labels = Vec<Label>;

/// A query's result, as Prometheus' result types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Point),
    String {
        t_ms: i64,
        value: String,
    },
    /// An instant vector, in the order the expression gives (e.g. `sort`).
    Vector(Vec<Sample>),
    /// Series sorted by label set, each with points oldest first.
    Matrix(Vec<Series>),
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sorted by name.
    pub labels: Vec<Label>,
    /// The value at the evaluation time.
    pub point: Point,
}

/// One series of a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Sorted by name.
    pub labels: Vec<Label>,
    pub points: Vec<Point>,
}

/// The value of label `name` in `labels`, "" when absent (as in PromQL).
pub(crate) fn get<'a>(labels: &'a [Label], name: &str) -> &'a str {
    labels
        .binary_search_by(|l| l.name.as_str().cmp(name))
        .map_or("", |i| labels[i].value.as_str())
}

/// Sets label `name` to `value`, removing it when `value` is empty.
pub(crate) fn set(labels: &mut Labels, name: &str, value: &str) {
    match labels.binary_search_by(|l| l.name.as_str().cmp(name)) {
        Ok(i) if value.is_empty() => {
            labels.remove(i);
        }
        Ok(i) => labels[i].value = value.to_owned(),
        Err(_) if value.is_empty() => {}
        Err(i) => labels.insert(i, Label::new(name, value)),
    }
}

/// `labels` without `__name__`.
pub(crate) fn drop_name(mut labels: Labels) -> Labels {
    labels.retain(|l| l.name != METRIC_NAME);
    labels
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_labels_sorted_and_empty_values_remove() {
        let mut labels = vec![Label::new("a", "1"), Label::new("c", "3")];
        set(&mut labels, "b", "2");
        assert_eq!(get(&labels, "b"), "2");
        assert_eq!(labels[1].name, "b");
        set(&mut labels, "a", "");
        set(&mut labels, "z", "");
        assert_eq!(labels, vec![Label::new("b", "2"), Label::new("c", "3")]);
        assert_eq!(get(&labels, "a"), "");
        assert!(valid_label_name("_x9") && !valid_label_name("9x") && !valid_label_name(""));
    }
}
