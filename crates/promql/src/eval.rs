//! The evaluator: every expression is evaluated over a grid of steps, as
//! Prometheus' engine does; selectors read each series once for the grid.

use crate::select::{self, RawSeries, Selected};
use crate::value::{Labels, Sample, Series, Value, drop_name};
use crate::{DEFAULT_SUBQUERY_STEP_MS, LOOKBACK_MS, Limits, PromqlError};
use hostwatch_tsdb::{Point, Store};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Evaluation times: `start`, `start + step`, ... up to `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
}

impl Grid {
    /// `step` must be positive and `end` at or after `start`.
    pub(crate) fn new(start: i64, end: i64, step: i64) -> Self {
        Grid { start, end, step }
    }

    pub(crate) fn len(&self) -> usize {
        (self.end.saturating_sub(self.start) / self.step) as usize + 1
    }

    pub(crate) fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// An expression's value at every step of a grid.
pub(crate) enum Stepped {
    Scalar(Vec<f64>),
    Vector(Vec<StepSeries>),
    String(String),
}

/// A series of an instant vector over a grid: a value at some steps.
pub(crate) struct StepSeries {
    pub(crate) labels: Labels,
    /// (step index, value), steps ascending.
    pub(crate) points: Vec<(usize, f64)>,
}

/// A range vector over a grid: its series, and per step the window
/// `[end - range, end]` a function sees.
pub(crate) struct Windows {
    pub(crate) series: Vec<Source>,
    /// The window's end at each step (evaluation time, `@`, minus offset).
    pub(crate) ends: Vec<i64>,
    pub(crate) range_ms: i64,
}

/// Where a range vector's series comes from.
pub(crate) enum Source {
    /// A stored series, read when its windows are walked.
    Stored(Selected),
    /// A series' points at hand: a subquery's, or a stored series' read
    /// with others over a short span.
    Evaluated(RawSeries),
}

impl Source {
    pub(crate) fn labels(&self) -> &Labels {
        match self {
            Source::Stored(s) => &s.labels,
            Source::Evaluated(s) => &s.labels,
        }
    }

    /// Moves the labels out, leaving none: for the last use of a source.
    pub(crate) fn take_labels(&mut self) -> Labels {
        match self {
            Source::Stored(s) => std::mem::take(&mut s.labels),
            Source::Evaluated(s) => std::mem::take(&mut s.labels),
        }
    }
}

impl Windows {
    /// The span every window lies in.
    fn span(&self) -> (i64, i64) {
        let (first, last) = (self.ends[0], self.ends[self.ends.len() - 1]);
        (
            first.min(last).saturating_sub(self.range_ms),
            first.max(last),
        )
    }
}

/// One step's window over a series' points: `points[start..end]`, never
/// empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) step: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Sets `spans` to the window of each step that holds any of `points`
/// (oldest first), sliding over them once.
fn window_spans(points: &[Point], ends: &[i64], range_ms: i64, spans: &mut Vec<Span>) {
    spans.clear();
    let (mut lo, mut hi) = (0, 0);
    for (step, &end) in ends.iter().enumerate() {
        let start = end.saturating_sub(range_ms);
        // Ends never decrease; should one, start over.
        if lo > 0 && points[lo - 1].t_ms >= start {
            lo = 0;
            hi = 0;
        }
        while lo < points.len() && points[lo].t_ms < start {
            lo += 1;
        }
        hi = hi.max(lo);
        while hi < points.len() && points[hi].t_ms <= end {
            hi += 1;
        }
        if hi > lo {
            spans.push(Span {
                step,
                start: lo,
                end: hi,
            });
        }
    }
}

/// Gathers per-step results into series, refusing two equal label sets
/// at one step as Prometheus does.
#[derive(Default)]
pub(crate) struct Collect {
    index: HashMap<Labels, usize>,
    out: Vec<StepSeries>,
}

impl Collect {
    /// Adds one value of `labels` at `step`.
    pub(crate) fn push(&mut self, step: usize, labels: Labels, v: f64) -> Result<(), PromqlError> {
        let slot = self.slot(labels);
        self.push_slot(slot, step, v)
    }

    /// Adds one value at `step` to the series of [`Collect::slot`] `slot`.
    pub(crate) fn push_slot(
        &mut self,
        slot: usize,
        step: usize,
        v: f64,
    ) -> Result<(), PromqlError> {
        let points = &mut self.out[slot].points;
        if points.last().is_some_and(|p| p.0 == step) {
            return Err(duplicate_labelset());
        }
        points.push((step, v));
        Ok(())
    }

    /// Adds a whole series' values (steps ascending).
    pub(crate) fn extend(&mut self, labels: Labels, values: Vec<(usize, f64)>) {
        if values.is_empty() {
            return;
        }
        let points = self.points_of(labels);
        if points.is_empty() {
            *points = values;
        } else {
            points.extend(values);
        }
    }

    fn points_of(&mut self, labels: Labels) -> &mut Vec<(usize, f64)> {
        let slot = self.slot(labels);
        &mut self.out[slot].points
    }

    /// The number of the series of `labels`, made on first use: pushing
    /// by number spares a label lookup per value.
    pub(crate) fn slot(&mut self, labels: Labels) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            return i;
        }
        self.out.push(StepSeries {
            labels: labels.clone(),
            points: Vec::new(),
        });
        self.index.insert(labels, self.out.len() - 1);
        self.out.len() - 1
    }

    /// The series, in the order their label sets first came; refused when
    /// two inputs gave one label set a value at the same step.
    pub(crate) fn finish(mut self) -> Result<Vec<StepSeries>, PromqlError> {
        for s in &mut self.out {
            // Series pushed one after another may interleave their steps.
            if !s.points.is_sorted_by_key(|p| p.0) {
                s.points.sort_by_key(|p| p.0);
            }
            if s.points.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(duplicate_labelset());
            }
        }
        Ok(self.out)
    }
}

pub(crate) fn duplicate_labelset() -> PromqlError {
    PromqlError::Execution("vector cannot contain metrics with the same labelset".into())
}

/// Walks a vector step by step: the samples present at each step.
pub(crate) struct StepCursor<'v> {
    series: &'v [StepSeries],
    next: Vec<usize>,
}

impl<'v> StepCursor<'v> {
    pub(crate) fn new(series: &'v [StepSeries]) -> Self {
        StepCursor {
            series,
            next: vec![0; series.len()],
        }
    }

    /// (series index, value) of the samples at `step`; steps must be
    /// asked in ascending order.
    pub(crate) fn at(&mut self, step: usize) -> Vec<(usize, f64)> {
        let mut out = Vec::new();
        for (i, s) in self.series.iter().enumerate() {
            let n = &mut self.next[i];
            while *n < s.points.len() && s.points[*n].0 < step {
                *n += 1;
            }
            if let Some(&(st, v)) = s.points.get(*n)
                && st == step
            {
                out.push((i, v));
            }
        }
        out
    }

    pub(crate) fn labels(&self, i: usize) -> &'v Labels {
        &self.series[i].labels
    }
}

/// One query's evaluation state: the store, the limits, what was spent.
pub(crate) struct Evaluator<'s> {
    store: &'s Store,
    max_samples: usize,
    deadline: Option<Instant>,
    samples: usize,
    /// The query's own grid, for `@ start()` and `@ end()`.
    query: Grid,
}

impl<'s> Evaluator<'s> {
    pub(crate) fn new(store: &'s Store, limits: Limits, started: Instant, query: Grid) -> Self {
        Evaluator {
            store,
            max_samples: limits.max_samples,
            deadline: started.checked_add(limits.timeout),
            samples: 0,
            query,
        }
    }

    /// An instant query's result.
    pub(crate) fn instant(&mut self, expr: &Expr) -> Result<Value, PromqlError> {
        let grid = self.query;
        let t = grid.start;
        if let Some(mut windows) = self.maybe_windows(expr, &grid)? {
            let mut out = Vec::new();
            for i in 0..windows.series.len() {
                let mut points = Vec::new();
                self.each_window(&windows, i, |_, window| {
                    points.extend_from_slice(window);
                    Ok(())
                })?;
                if !points.is_empty() {
                    out.push(Series {
                        labels: windows.series[i].take_labels(),
                        points,
                    });
                }
            }
            return Ok(Value::Matrix(out));
        }
        Ok(match self.eval(expr, &grid)? {
            Stepped::Scalar(v) => Value::Scalar(Point {
                t_ms: t,
                value: v[0],
            }),
            Stepped::String(s) => Value::String { t_ms: t, value: s },
            Stepped::Vector(series) => Value::Vector(
                series
                    .into_iter()
                    .filter_map(|s| {
                        s.points.first().map(|&(_, value)| Sample {
                            labels: s.labels,
                            point: Point { t_ms: t, value },
                        })
                    })
                    .collect(),
            ),
        })
    }

    /// A range query's result: always a matrix, series sorted.
    pub(crate) fn range(&mut self, expr: &Expr) -> Result<Value, PromqlError> {
        let grid = self.query;
        match expr.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            other => {
                return Err(PromqlError::BadData(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    type_name(other)
                )));
            }
        }
        let series = match self.eval(expr, &grid)? {
            Stepped::Scalar(values) => vec![Series {
                labels: Vec::new(),
                points: values
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| Point {
                        t_ms: grid.ts(i),
                        value,
                    })
                    .collect(),
            }],
            Stepped::Vector(series) => {
                let mut out: Vec<Series> = series
                    .into_iter()
                    .filter(|s| !s.points.is_empty())
                    .map(|s| Series {
                        labels: s.labels,
                        points: s
                            .points
                            .into_iter()
                            .map(|(i, value)| Point {
                                t_ms: grid.ts(i),
                                value,
                            })
                            .collect(),
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                out
            }
            Stepped::String(_) => {
                return Err(PromqlError::BadData(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
        };
        Ok(Value::Matrix(series))
    }

    /// Counts `n` more samples against the limit.
    pub(crate) fn charge(&mut self, n: usize) -> Result<(), PromqlError> {
        self.samples = self.samples.saturating_add(n);
        if self.samples > self.max_samples {
            return Err(PromqlError::TooManySamples("query execution"));
        }
        Ok(())
    }

    /// Refuses to go on past the deadline.
    pub(crate) fn check_deadline(&self) -> Result<(), PromqlError> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                Err(PromqlError::Timeout("expression evaluation"))
            }
            _ => Ok(()),
        }
    }

    /// `expr` at every step of `grid`.
    pub(crate) fn eval(&mut self, expr: &Expr, grid: &Grid) -> Result<Stepped, PromqlError> {
        self.check_deadline()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Stepped::Scalar(vec![n.val; grid.len()])),
            Expr::StringLiteral(s) => Ok(Stepped::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Stepped::Scalar(v) => Ok(Stepped::Scalar(v.into_iter().map(|x| -x).collect())),
                Stepped::Vector(series) => {
                    let mut collect = Collect::default();
                    for s in series {
                        let values = s.points.into_iter().map(|(step, v)| (step, -v)).collect();
                        collect.extend(drop_name(s.labels), values);
                    }
                    Ok(Stepped::Vector(collect.finish()?))
                }
                Stepped::String(_) => Err(unsupported("unary minus on a string")),
            },
            Expr::VectorSelector(vs) => Ok(Stepped::Vector(self.vector_selector(vs, grid, false)?)),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Err(PromqlError::BadData(format!(
                "a range vector ({expr}) is allowed only as a function's argument or as a whole instant query"
            ))),
            Expr::Call(call) => crate::instant_fns::call(self, call, grid),
            Expr::Aggregate(agg) => crate::aggregate::eval(self, agg, grid),
            Expr::Binary(b) => crate::binary::eval(self, b, grid),
            Expr::Extension(_) => Err(unsupported("extension expressions")),
        }
    }

    /// `expr`, which must be a scalar, at every step.
    pub(crate) fn eval_scalar(
        &mut self,
        expr: &Expr,
        grid: &Grid,
    ) -> Result<Vec<f64>, PromqlError> {
        match self.eval(expr, grid)? {
            Stepped::Scalar(v) => Ok(v),
            _ => Err(PromqlError::BadData(format!("expected a scalar: {expr}"))),
        }
    }

    /// `expr`, which must be an instant vector, at every step.
    pub(crate) fn eval_vector(
        &mut self,
        expr: &Expr,
        grid: &Grid,
    ) -> Result<Vec<StepSeries>, PromqlError> {
        match self.eval(expr, grid)? {
            Stepped::Vector(v) => Ok(v),
            _ => Err(PromqlError::BadData(format!(
                "expected an instant vector: {expr}"
            ))),
        }
    }

    /// Gives `sink` each series of the instant vector `expr`, in the order
    /// [`Evaluator::eval_vector`] gives them: one at a time as each is read
    /// for a selector or a range function, from the whole vector for any
    /// other expression. A consumer that reduces them (an aggregation)
    /// then holds its result, not every input series.
    pub(crate) fn each_series(
        &mut self,
        expr: &Expr,
        grid: &Grid,
        sink: &mut dyn FnMut(StepSeries) -> Result<(), PromqlError>,
    ) -> Result<(), PromqlError> {
        self.check_deadline()?;
        match expr {
            Expr::Paren(p) => return self.each_series(&p.expr, grid, sink),
            Expr::VectorSelector(vs) => return self.vector_selector_each(vs, grid, false, sink),
            Expr::Call(call) => {
                if let Some(done) = crate::instant_fns::range_call_series(self, call, grid, sink) {
                    return done;
                }
            }
            _ => {}
        }
        for series in self.eval_vector(expr, grid)? {
            sink(series)?;
        }
        Ok(())
    }

    /// The instant vector of `vs` over `grid`: at each step the newest
    /// sample at most [`LOOKBACK_MS`] before the step's time (moved by
    /// `@` and `offset`), both ends included as in Prometheus 2.42. With
    /// `timestamps`, the sample's time in seconds instead of its value
    /// (for `timestamp()`).
    pub(crate) fn vector_selector(
        &mut self,
        vs: &VectorSelector,
        grid: &Grid,
        timestamps: bool,
    ) -> Result<Vec<StepSeries>, PromqlError> {
        let mut out = Vec::new();
        self.vector_selector_each(vs, grid, timestamps, &mut |series| {
            out.push(series);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Evaluator::vector_selector`]'s series, each given to `sink` once
    /// read.
    fn vector_selector_each(
        &mut self,
        vs: &VectorSelector,
        grid: &Grid,
        timestamps: bool,
        sink: &mut dyn FnMut(StepSeries) -> Result<(), PromqlError>,
    ) -> Result<(), PromqlError> {
        let refs = self.ref_times(&vs.at, &vs.offset, grid);
        let (first, last) = (refs[0], refs[refs.len() - 1]);
        let span = (first.min(last).saturating_sub(LOOKBACK_MS), first.max(last));
        let selected = select::select(self.store, vs)?;
        // One step (an instant query) keeps each series' newest point in
        // the lookback, which the store mostly knows without reading.
        let mut newest = if refs.len() == 1 {
            self.check_deadline()?;
            let newest = select::newest_many(self.store, &selected, span.0, span.1)?;
            self.charge(newest.iter().flatten().count())?;
            Some(newest.into_iter())
        } else {
            None
        };
        let mut read_together = match newest {
            Some(_) => None,
            None => self.read_short(&selected, span)?.map(Vec::into_iter),
        };
        for series in selected {
            self.check_deadline()?;
            let (one, read): ([Point; 1], Vec<Point>);
            let points: &[Point] = match (&mut newest, &mut read_together) {
                (Some(newest), _) => match newest.next().flatten() {
                    Some(p) => {
                        one = [p];
                        &one
                    }
                    None => &[],
                },
                (None, Some(together)) => {
                    read = together.next().unwrap_or_default();
                    &read
                }
                (None, None) => {
                    read = self.read(&series, span)?;
                    &read
                }
            };
            let mut next = 0;
            let mut values = Vec::new();
            for (step, &r) in refs.iter().enumerate() {
                if next > 0 && points[next - 1].t_ms > r {
                    next = 0;
                }
                while next < points.len() && points[next].t_ms <= r {
                    next += 1;
                }
                if next == 0 {
                    continue;
                }
                let p = points[next - 1];
                if p.t_ms >= r.saturating_sub(LOOKBACK_MS) {
                    let v = if timestamps {
                        p.t_ms as f64 / 1000.0
                    } else {
                        p.value
                    };
                    values.push((step, v));
                }
            }
            self.charge(values.len())?;
            if !values.is_empty() {
                sink(StepSeries {
                    labels: series.labels,
                    points: values,
                })?;
            }
        }
        Ok(())
    }

    /// The windows of a range selector or subquery (through parentheses)
    /// over `grid`, or `None` for any other expression.
    pub(crate) fn maybe_windows(
        &mut self,
        expr: &Expr,
        grid: &Grid,
    ) -> Result<Option<Windows>, PromqlError> {
        match expr {
            Expr::Paren(p) => self.maybe_windows(&p.expr, grid),
            Expr::MatrixSelector(ms) => self.matrix_selector(ms, grid).map(Some),
            Expr::Subquery(sq) => self.subquery(sq, grid).map(Some),
            _ => Ok(None),
        }
    }

    fn matrix_selector(
        &mut self,
        ms: &MatrixSelector,
        grid: &Grid,
    ) -> Result<Windows, PromqlError> {
        let range_ms = duration_ms(ms.range);
        let ends = self.ref_times(&ms.vs.at, &ms.vs.offset, grid);
        let selected = select::select(self.store, &ms.vs)?;
        let mut windows = Windows {
            series: Vec::new(),
            ends,
            range_ms,
        };
        windows.series = match self.read_short(&selected, windows.span())? {
            Some(read) => selected
                .into_iter()
                .zip(read)
                .map(|(s, points)| {
                    Source::Evaluated(RawSeries {
                        labels: s.labels,
                        points,
                    })
                })
                .collect(),
            None => selected.into_iter().map(Source::Stored).collect(),
        };
        Ok(windows)
    }

    /// A subquery: its expression evaluated on a grid of its own step,
    /// aligned to multiples of the step as in Prometheus, covering every
    /// window of `grid`.
    fn subquery(&mut self, sq: &SubqueryExpr, grid: &Grid) -> Result<Windows, PromqlError> {
        let range_ms = duration_ms(sq.range);
        let step = sq.step.map_or(DEFAULT_SUBQUERY_STEP_MS, duration_ms);
        if step <= 0 {
            return Err(PromqlError::BadData(format!(
                "subquery step must be positive: {sq}"
            )));
        }
        let ends = self.ref_times(&sq.at, &sq.offset, grid);
        let (first, last) = (ends[0], ends[ends.len() - 1]);
        let (lo, hi) = (first.min(last), first.max(last));
        let from = lo.saturating_sub(range_ms);
        let mut start = from.div_euclid(step).saturating_mul(step);
        if start < from {
            start = start.saturating_add(step);
        }
        let series = if start > hi {
            Vec::new()
        } else {
            let inner = Grid::new(start, hi, step);
            // Every inner step may hold a value of each series: count one
            // per step up front, so a fine step over a long range is
            // refused before it is evaluated.
            self.charge(inner.len())?;
            self.eval_vector(&sq.expr, &inner)?
                .into_iter()
                .map(|s| {
                    Source::Evaluated(RawSeries {
                        labels: s.labels,
                        points: s
                            .points
                            .into_iter()
                            .map(|(i, value)| Point {
                                t_ms: inner.ts(i),
                                value,
                            })
                            .collect(),
                    })
                })
                .collect()
        };
        Ok(Windows {
            series,
            ends,
            range_ms,
        })
    }

    /// The points of a stored series in `span` (both ends included),
    /// counted against the sample limit.
    fn read(&mut self, series: &Selected, span: (i64, i64)) -> Result<Vec<Point>, PromqlError> {
        let points = select::points(self.store, series, span.0, span.1)?;
        self.charge(points.len())?;
        Ok(points)
    }

    /// The points of every series of `selected` in `span` when the span is
    /// short and there are several series, read together (in the store's
    /// order, which spares most page reads) and counted against the sample
    /// limit; `None` otherwise, to be read one series at a time.
    fn read_short(
        &mut self,
        selected: &[Selected],
        span: (i64, i64),
    ) -> Result<Option<Vec<Vec<Point>>>, PromqlError> {
        if selected.len() < 2 || span.1.saturating_sub(span.0) > select::MANY_SPAN_MS {
            return Ok(None);
        }
        self.check_deadline()?;
        let read = select::points_many(self.store, selected, span.0, span.1)?;
        self.charge(read.iter().map(Vec::len).sum())?;
        Ok(Some(read))
    }

    /// Calls `f(step, points of the window)` for each step whose window
    /// holds points of series `i` of `windows`, reading a stored series
    /// once for all its windows.
    pub(crate) fn each_window(
        &mut self,
        windows: &Windows,
        i: usize,
        mut f: impl FnMut(usize, &[Point]) -> Result<(), PromqlError>,
    ) -> Result<(), PromqlError> {
        let mut spans = Vec::new();
        self.with_windows(windows, i, &mut spans, |points, spans| {
            for s in spans {
                f(s.step, &points[s.start..s.end])?;
            }
            Ok(())
        })?
    }

    /// Calls `f(points, spans)` once with the points of series `i` of
    /// `windows` (a stored series read once) and the window of each step
    /// that holds any of them, in `spans` (a buffer kept across calls), so
    /// a function can walk several windows at once.
    pub(crate) fn with_windows<R>(
        &mut self,
        windows: &Windows,
        i: usize,
        spans: &mut Vec<Span>,
        f: impl FnOnce(&[Point], &[Span]) -> R,
    ) -> Result<R, PromqlError> {
        let read;
        let points = match &windows.series[i] {
            Source::Stored(series) => {
                read = self.read(series, windows.span())?;
                &read
            }
            Source::Evaluated(series) => &series.points,
        };
        window_spans(points, &windows.ends, windows.range_ms, spans);
        Ok(f(points, spans))
    }

    /// Each step's reference time: the step's time (or the `@` time),
    /// minus the offset.
    fn ref_times(&self, at: &Option<AtModifier>, offset: &Option<Offset>, grid: &Grid) -> Vec<i64> {
        let offset = match offset {
            None => 0,
            Some(Offset::Pos(d)) => duration_ms(*d),
            Some(Offset::Neg(d)) => duration_ms(*d).saturating_neg(),
        };
        let pinned = at.as_ref().map(|at| match at {
            AtModifier::Start => self.query.start,
            AtModifier::End => self.query.end,
            AtModifier::At(t) => system_time_ms(*t),
        });
        (0..grid.len())
            .map(|i| pinned.unwrap_or(grid.ts(i)).saturating_sub(offset))
            .collect()
    }
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn system_time_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(d),
        Err(e) => duration_ms(e.duration()).saturating_neg(),
    }
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Scalar => "scalar",
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

/// The error for a construct the engine does not evaluate, naming it.
pub(crate) fn unsupported(what: &str) -> PromqlError {
    PromqlError::BadData(format!("unsupported in hostwatch's PromQL: {what}"))
}

#[cfg(test)]
mod tests {
    use crate::testdata::{Fixture, every, load, show};
    use crate::{Engine, Limits, PromqlError, Value};

    /// `m` on host a: the minute number every minute from 0 s to 600 s
    /// (0, 1, ... 10); `m` on host b from 300 s to 420 s (100 + minute);
    /// `n` on host a, 7 at 0 s.
    fn fixture() -> Fixture {
        load(&[
            ("a", "m", &[], every(0, 600, 60, |t| (t / 60) as f64)),
            (
                "b",
                "m",
                &[],
                every(300, 420, 60, |t| (100 + t / 60) as f64),
            ),
            ("a", "n", &[], vec![(0, 7.0)]),
        ])
    }

    #[test]
    fn instant_selector_takes_the_newest_sample_within_the_lookback_both_ends_closed() {
        let fx = fixture();
        // At 630 s: a's newest is 600 s (10); b's newest 420 s, 210 s old.
        fx.check(
            "m",
            630,
            &[("__name__=m,host=a", 10.0), ("__name__=m,host=b", 107.0)],
        );
        // At 720 s b's last sample (420 s) is exactly 5 min old: still in.
        fx.check(
            "m",
            720,
            &[("__name__=m,host=a", 10.0), ("__name__=m,host=b", 107.0)],
        );
        // One millisecond later it is out.
        let later = Engine::default().instant(&fx.store, "m", 720_001).unwrap();
        let Value::Vector(samples) = later else {
            panic!()
        };
        assert_eq!(samples.len(), 1);
        // Before b's first sample, only a.
        fx.check("m", 290, &[("__name__=m,host=a", 4.0)]);
    }

    #[test]
    fn name_matchers_select_across_metrics_by_pattern() {
        let fx = fixture();
        // N's only sample is 600 s old.
        fx.check(
            r#"{__name__=~"m|n", host="a"}"#,
            600,
            &[("__name__=m,host=a", 10.0)],
        );
        // Every metric of host a.
        fx.check(
            r#"{__name__=~".+", host="a"}"#,
            200,
            &[("__name__=m,host=a", 3.0), ("__name__=n,host=a", 7.0)],
        );
        fx.check(
            r#"{__name__!="m", host="a"}"#,
            100,
            &[("__name__=n,host=a", 7.0)],
        );
        fx.check(r#"m{host=~"b|c"}"#, 400, &[("__name__=m,host=b", 106.0)]);
    }

    #[test]
    fn offset_and_at_move_the_reference_time() {
        let fx = fixture();
        let cases = [
            // offset 5m at 600 s reads 300 s: minute 5.
            (r#"m{host="a"} offset 5m"#, 600, 5.0),
            // A negative offset looks ahead: at 300 s, 360 s.
            (r#"m{host="a"} offset -1m"#, 300, 6.0),
            // @ pins the time whatever the evaluation time.
            (r#"m{host="a"} @ 120"#, 600, 2.0),
            (r#"m{host="a"} @ 180 offset 1m"#, 600, 2.0),
        ];
        fx.check_each("__name__=m,host=a", &cases);
        // In a range query, @ start() and @ end() are the query's ends.
        let series = fx.range(r#"m{host="a"} @ end()"#, 0, 120, 60);
        assert_eq!(
            series,
            vec![(
                "__name__=m,host=a".into(),
                vec![(0, 2.0), (60, 2.0), (120, 2.0)]
            )]
        );
        let series = fx.range(r#"m{host="a"} @ start()"#, 120, 240, 120);
        assert_eq!(
            series,
            vec![("__name__=m,host=a".into(), vec![(120, 2.0), (240, 2.0)])]
        );
    }

    #[test]
    fn range_queries_step_with_series_that_start_and_stop_mid_range() {
        let fx = fixture();
        // Steps 0, 300 ... 1200: a is 0, 5, 10, then 10 (600 s is 300 s
        // before 900 s), then gone; b from 300 s (105) until 720 s.
        let series = fx.range("m", 0, 1200, 300);
        assert_eq!(
            series,
            vec![
                (
                    "__name__=m,host=a".into(),
                    vec![(0, 0.0), (300, 5.0), (600, 10.0), (900, 10.0)]
                ),
                ("__name__=m,host=b".into(), vec![(300, 105.0), (600, 107.0)]),
            ]
        );
        // A scalar gives one series without labels.
        assert_eq!(
            fx.range("1 + 1", 0, 60, 60),
            vec![(String::new(), vec![(0, 2.0), (60, 2.0)])]
        );
    }

    #[test]
    fn an_instant_range_selector_returns_its_raw_window_both_ends_closed() {
        let fx = fixture();
        let Value::Matrix(series) = fx.instant(r#"m{host="a"}[2m]"#, 600).unwrap() else {
            panic!("not a matrix")
        };
        assert_eq!(series.len(), 1);
        assert_eq!(show(&series[0].labels), "__name__=m,host=a");
        let points: Vec<(i64, f64)> = series[0].points.iter().map(|p| (p.t_ms, p.value)).collect();
        // [480 s, 600 s]: 480 s is exactly 2 min back and included.
        assert_eq!(
            points,
            vec![(480_000, 8.0), (540_000, 9.0), (600_000, 10.0)]
        );
    }

    #[test]
    fn subqueries_evaluate_on_their_own_aligned_grid() {
        let fx = fixture();
        let cases = [
            // [5m:1m] at 600 s: inner steps 300 ... 600 s, m = 5 ... 10.
            (r#"max_over_time(m{host="a"}[5m:1m])"#, 600, 10.0),
            (r#"min_over_time(m{host="a"}[5m:1m])"#, 600, 5.0),
            // Without a step, the default minute: 6 inner steps.
            (r#"count_over_time(m{host="a"}[5m:])"#, 600, 6.0),
            // offset 1m: window [420 s, 540 s], inner steps 420, 480, 540: 7 + 8 + 9.
            (r#"sum_over_time(m{host="a"}[2m:1m] offset 1m)"#, 600, 24.0),
            // Inner steps align to multiples of the step: at 630 s with
            // [2m:1m], 540 and 600 s (510 s is not a multiple).
            (r#"sum_over_time(m{host="a"}[2m:1m])"#, 630, 19.0),
        ];
        fx.check_each("host=a", &cases);
        // A subquery as a whole instant query is a matrix of its inner points.
        let Value::Matrix(series) = fx.instant(r#"m{host="a"}[2m:1m]"#, 600).unwrap() else {
            panic!("not a matrix")
        };
        assert_eq!(series[0].points.len(), 3);
    }

    #[test]
    fn a_range_query_of_a_range_vector_or_a_string_is_bad_data() {
        let fx = fixture();
        for expr in ["m[5m]", r#""text""#] {
            let err = Engine::default()
                .range(&fx.store, expr, 0, 60_000, 60_000)
                .unwrap_err();
            assert!(
                matches!(err, PromqlError::BadData(ref m) if m.contains("for range query")),
                "{expr}: {err}"
            );
        }
    }

    #[test]
    fn sample_limit_and_deadline_are_enforced() {
        let fx = fixture();
        // m at 600 s reads the newest sample of each of its 2 series and
        // gives them: 2 + 2 touched.
        let engine = Engine::new(Limits {
            max_samples: 3,
            ..Limits::default()
        });
        let err = engine.instant(&fx.store, "m", 600_000).unwrap_err();
        assert!(matches!(err, PromqlError::TooManySamples(_)), "{err}");
        assert_eq!(err.error_type(), "execution");
        let engine = Engine::new(Limits {
            max_samples: 100,
            ..Limits::default()
        });
        // Over 0-600 s: 11 + 3 read, 11 + 6 results: within 100, not 20.
        assert!(engine.range(&fx.store, "m", 0, 600_000, 60_000).is_ok());
        let engine = Engine::new(Limits {
            max_samples: 20,
            ..Limits::default()
        });
        let err = engine
            .range(&fx.store, "m", 0, 600_000, 60_000)
            .unwrap_err();
        assert!(matches!(err, PromqlError::TooManySamples(_)), "{err}");
        let engine = Engine::new(Limits {
            timeout: std::time::Duration::ZERO,
            ..Limits::default()
        });
        let err = engine.instant(&fx.store, "m", 600_000).unwrap_err();
        assert_eq!(err, PromqlError::Timeout("expression evaluation"));
        assert_eq!(err.error_type(), "timeout");
    }
}
