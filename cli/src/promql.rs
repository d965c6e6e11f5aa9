//! `hostwatch promql EXPR`: a PromQL expression evaluated by the
//! collector (`Query.Promql`, the HTTPS API's engine and limits), at one
//! time as a table, over a range as a sparkline per series, or as
//! Prometheus' JSON.

use crate::UsageError;
use crate::client::ClientConfig;
use crate::read::{parse_duration, parse_moment, runtime, table};
use crate::units::{self, Unit};
use clap::Args;
use hostwatch_alerting::format_rfc3339;
use hostwatch_proto::v1::promql_request::When;
use hostwatch_proto::v1::promql_response::Result as Answer;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{Label, PromqlRange, PromqlRequest, PromqlResponse, PromqlSeries};
use hostwatch_stdx::now_ms;
use std::path::Path;
use std::time::Duration;

/// Steps of a range when `--step` is not given.
const DEFAULT_STEPS: u32 = 60;
/// Widest sparkline, in characters; longer ranges fold steps together.
const SPARKLINE_WIDTH: usize = 60;
/// The sparkline's levels, lowest first.
const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

#[derive(Args)]
pub(crate) struct PromqlArgs {
    /// The PromQL expression, e.g. 'rate(host_network_receive_bytes_total[5m])'.
    expr: String,
    /// Evaluation time (with --range, the range's end): an RFC 3339 time
    /// (2026-11-23T10:00:00Z) or a time ago (15m); default: now.
    #[arg(long, value_parser = parse_moment)]
    at: Option<i64>,
    /// Evaluate at every --step over this long a range, e.g. 1h.
    #[arg(long, value_parser = parse_duration)]
    range: Option<Duration>,
    /// Step of --range, e.g. 1m; default: the range in 60 steps.
    #[arg(long, requires = "range", value_parser = parse_duration)]
    step: Option<Duration>,
    /// Print Prometheus' JSON (`{"status": "success", "data": ...}`) with
    /// raw numbers instead of a table.
    #[arg(long)]
    json: bool,
}

/// The range of a range query: start, end and step in ms.
#[derive(Debug, Clone, Copy)]
struct Grid {
    start: i64,
    end: i64,
    step: i64,
}

pub(crate) fn run(config_path: &Path, args: PromqlArgs) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    let grid = args.range.map(|range| {
        let end = args.at.unwrap_or_else(now_ms);
        let step = args.step.unwrap_or(range / DEFAULT_STEPS);
        Grid {
            start: end.saturating_sub(millis(range)),
            end,
            step: millis(step).max(1),
        }
    });
    let when = match (grid, args.at) {
        (Some(g), _) => Some(When::Range(PromqlRange {
            start_ms: g.start,
            end_ms: g.end,
            step_ms: g.step,
        })),
        (None, Some(at)) => Some(When::TimeMs(at)),
        (None, None) => None,
    };
    let request = PromqlRequest {
        expr: args.expr.clone(),
        when,
    };
    let response = runtime()?.block_on(async {
        let channel = config.connect().await?;
        let mut client = QueryClient::new(channel).max_decoding_message_size(256 << 20);
        client
            .promql(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| refused(&args.expr, &status))
    })?;
    if args.json {
        let data = hostwatch_collector::promql_json(&response);
        let doc = serde_json::json!({"status": "success", "data": data});
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    print!(
        "{}",
        render(&response, units::of_expression(&args.expr), grid)
    );
    Ok(())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A refusal of `expr` as an error naming it, the problem and the status;
/// a bad expression, step or range is the user's to fix (exit 64).
fn refused(expr: &str, status: &tonic::Status) -> anyhow::Error {
    let text = format!("{expr}: {} ({:?})", status.message(), status.code());
    if status.code() == tonic::Code::InvalidArgument {
        UsageError(text).into()
    } else {
        anyhow::anyhow!(text)
    }
}

/// The answer as people read it: a table of an instant vector, a
/// sparkline per series of a range, the points of an instant query's
/// range vector, a scalar or a string; `expr_unit` for series without
/// a metric name.
fn render(response: &PromqlResponse, expr_unit: Unit, grid: Option<Grid>) -> String {
    let unit_of = |labels: &[Label]| {
        units::of_series(
            labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            expr_unit,
        )
    };
    match &response.result {
        None => String::new(),
        Some(Answer::Scalar(s)) => format!("{}\n", expr_unit.format(s.value)),
        Some(Answer::String(s)) => format!("{}\n", s.value),
        Some(Answer::Vector(v)) if v.samples.is_empty() => "no series\n".to_owned(),
        Some(Answer::Vector(v)) => {
            let mut rows = vec![["SERIES".to_owned(), "VALUE".to_owned()]];
            rows.extend(
                v.samples
                    .iter()
                    .map(|s| [series_name(&s.labels), unit_of(&s.labels).format(s.value)]),
            );
            table(&rows)
        }
        Some(Answer::Matrix(m)) if m.series.is_empty() => "no series\n".to_owned(),
        Some(Answer::Matrix(m)) => match grid {
            Some(grid) => {
                let mut rows = vec![[
                    "SERIES".to_owned(),
                    "TREND".to_owned(),
                    "MIN".to_owned(),
                    "MAX".to_owned(),
                    "LAST".to_owned(),
                ]];
                rows.extend(
                    m.series
                        .iter()
                        .map(|s| trend_row(s, unit_of(&s.labels), grid)),
                );
                table(&rows)
            }
            None => m
                .series
                .iter()
                .map(|s| {
                    let unit = unit_of(&s.labels);
                    let points: String = s
                        .timestamps_ms
                        .iter()
                        .zip(&s.values)
                        .map(|(t, v)| format!("  {}  {}\n", format_rfc3339(*t), unit.format(*v)))
                        .collect();
                    format!("{}\n{points}", series_name(&s.labels))
                })
                .collect(),
        },
    }
}

/// A series as PromQL writes it: `name{label="value",...}`.
fn series_name(labels: &[Label]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str());
    let rest: Vec<String> = labels
        .iter()
        .filter(|l| l.name != "__name__")
        .map(|l| format!("{}={:?}", l.name, l.value))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// One range series' row: its name, sparkline, and lowest, highest and
/// last values in `unit`.
fn trend_row(series: &PromqlSeries, unit: Unit, grid: Grid) -> [String; 5] {
    let finite = series.values.iter().copied().filter(|v| v.is_finite());
    let min = finite.clone().reduce(f64::min);
    let max = finite.reduce(f64::max);
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| unit.format(v));
    [
        series_name(&series.labels),
        sparkline(&series.timestamps_ms, &series.values, grid),
        show(min),
        show(max),
        show(series.values.last().copied()),
    ]
}

/// The series over `grid` in at most [`SPARKLINE_WIDTH`] characters,
/// scaled from its lowest to its highest value; a column folding several
/// steps shows their highest (spikes stay visible), a column without a
/// finite value is blank.
fn sparkline(timestamps_ms: &[i64], values: &[f64], grid: Grid) -> String {
    let steps = usize::try_from((grid.end - grid.start) / grid.step + 1).unwrap_or(1);
    let width = steps.clamp(1, SPARKLINE_WIDTH);
    let mut columns: Vec<Option<f64>> = vec![None; width];
    for (t, v) in timestamps_ms.iter().zip(values) {
        let Ok(step) = usize::try_from((t - grid.start) / grid.step) else {
            continue;
        };
        if step >= steps || !v.is_finite() {
            continue;
        }
        let column = &mut columns[step * width / steps];
        *column = Some(column.map_or(*v, |c: f64| c.max(*v)));
    }
    let seen = columns.iter().flatten().copied();
    let (Some(low), Some(high)) = (seen.clone().reduce(f64::min), seen.reduce(f64::max)) else {
        return " ".repeat(width);
    };
    columns
        .iter()
        .map(|c| match c {
            None => ' ',
            // A flat line sits in the middle.
            Some(_) if high == low => LEVELS[3],
            Some(v) => {
                let level = ((v - low) / (high - low) * 7.0).round() as usize;
                LEVELS[level.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostwatch_proto::v1::{PromqlMatrix, PromqlSample, PromqlScalar, PromqlVector};

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(n, v)| Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect()
    }

    #[test]
    fn sparklines_scale_fold_and_leave_gaps() {
        let grid = Grid {
            start: 0,
            end: 7_000,
            step: 1_000,
        };
        let t: Vec<i64> = (0..8).map(|i| i * 1_000).collect();
        let rising: Vec<f64> = (0..8).map(f64::from).collect();
        assert_eq!(sparkline(&t, &rising, grid), "▁▂▃▄▅▆▇█");
        let flat = vec![5.0; 8];
        assert_eq!(sparkline(&t, &flat, grid), "▄▄▄▄▄▄▄▄");
        // Steps 2 and 3 missing, a NaN at 5: blanks.
        let (t2, v2): (Vec<i64>, Vec<f64>) =
            [(0, 0.0), (1, 7.0), (4, 7.0), (5, f64::NAN), (7, 0.0)]
                .iter()
                .map(|(i, v)| (i * 1_000, *v))
                .unzip();
        assert_eq!(sparkline(&t2, &v2, grid), "▁█  █  ▁");
        assert_eq!(sparkline(&[], &[], grid), "        ");
        // 601 steps fold into 60 columns; a spike stays visible.
        let wide = Grid {
            start: 0,
            end: 600_000,
            step: 1_000,
        };
        let t3: Vec<i64> = (0..=600).map(|i| i * 1_000).collect();
        let v3: Vec<f64> = (0..=600)
            .map(|i| if i == 301 { 9.0 } else { 1.0 })
            .collect();
        let line = sparkline(&t3, &v3, wide);
        assert_eq!(line.chars().count(), SPARKLINE_WIDTH);
        assert_eq!(line.chars().filter(|c| *c == '█').count(), 1, "{line}");
        assert_eq!(line.chars().filter(|c| *c == '▁').count(), 59, "{line}");
    }

    proptest::proptest! {
        /// Any series: one character per column, at most the width,
        /// levels or blanks only.
        #[test]
        fn sparklines_stay_within_their_width_and_scale(
            values in proptest::collection::vec(proptest::option::of(-1e12f64..1e12), 1..300),
        ) {
            let steps = values.len() as i64;
            let grid = Grid { start: 0, end: (steps - 1) * 1_000, step: 1_000 };
            let (t, v): (Vec<i64>, Vec<f64>) = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as i64 * 1_000, v)))
                .unzip();
            let line = sparkline(&t, &v, grid);
            let width = values.len().min(SPARKLINE_WIDTH);
            proptest::prop_assert_eq!(line.chars().count(), width);
            proptest::prop_assert!(line.chars().all(|c| c == ' ' || LEVELS.contains(&c)), "{}", line);
            let low = v.iter().copied().reduce(f64::min);
            let high = v.iter().copied().reduce(f64::max);
            // Unfolded (a step a column), the lowest and highest values
            // are the scale's ends.
            let unfolded = values.len() <= SPARKLINE_WIDTH;
            if let (Some(low), Some(high)) = (low, high) && low < high && unfolded {
                proptest::prop_assert!(line.contains('▁') && line.contains('█'), "{}", line);
            }
        }
    }

    #[test]
    fn answers_render_in_their_units() {
        let vector = PromqlResponse {
            result: Some(Answer::Vector(PromqlVector {
                samples: vec![
                    PromqlSample {
                        labels: labels(&[("__name__", "host_memory_used_bytes"), ("host", "a")]),
                        timestamp_ms: 0,
                        value: 1536.0,
                    },
                    PromqlSample {
                        labels: labels(&[("host", "b")]),
                        timestamp_ms: 0,
                        value: 0.25,
                    },
                ],
            })),
        };
        let table = render(&vector, Unit::Ratio, None);
        let name = "host_memory_used_bytes{host=\"a\"}";
        let lines = [
            format!("{:<32}  VALUE", "SERIES"),
            format!("{name}  1.5 KiB"),
            format!("{:<32}  25%", "{host=\"b\"}"),
        ];
        assert_eq!(table, lines.join("\n") + "\n");
        let scalar = PromqlResponse {
            result: Some(Answer::Scalar(PromqlScalar {
                timestamp_ms: 0,
                value: 90.0,
            })),
        };
        assert_eq!(render(&scalar, Unit::Seconds, None), "1m 30s\n");
        let grid = Grid {
            start: 0,
            end: 2_000,
            step: 1_000,
        };
        let matrix = PromqlResponse {
            result: Some(Answer::Matrix(PromqlMatrix {
                series: vec![PromqlSeries {
                    labels: labels(&[("device", "eth0")]),
                    timestamps_ms: vec![0, 1_000, 2_000],
                    values: vec![1024.0, 3072.0, 2048.0],
                }],
            })),
        };
        let trend = render(&matrix, Unit::BytesPerSecond, Some(grid));
        let row = trend.lines().nth(1).unwrap();
        assert_eq!(
            row.split("  ")
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>(),
            [
                "{device=\"eth0\"}",
                "▁█▅",
                "1.0 KiB/s",
                "3.0 KiB/s",
                "2.0 KiB/s"
            ],
            "{trend}"
        );
        let points = render(&matrix, Unit::Bytes, None);
        assert!(points.contains("1970-01-01T00:00:01Z  3.0 KiB"), "{points}");
        let empty = PromqlResponse {
            result: Some(Answer::Vector(PromqlVector::default())),
        };
        assert_eq!(render(&empty, Unit::Number, None), "no series\n");
    }
}
