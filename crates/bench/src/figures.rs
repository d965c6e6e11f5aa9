//! `hostwatch-bench figures`: rewrites the figures table of
//! `docs/benchmarks.md` from the `name=value` output of benchmark runs, so
//! the document says what the benchmarks print, not what someone copied.
//!
//! The table lies between [`BEGIN`] and [`END`]; each row is
//! `| run | figure | target | current | measured |`, where `run` is the
//! arguments given to `hostwatch-bench` and `figure` a name it prints. For
//! every row of the run named by `--run`, `current` becomes the value the
//! outputs hold (the median, then each run's value, when there are several)
//! and `measured` the `--measured` text; other rows and the rest of the
//! document are left as they are. A row whose figure an output lacks is an
//! error, so a renamed figure cannot leave a stale value behind.

use anyhow::{Context, bail, ensure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The line that opens the generated table.
pub(crate) const BEGIN: &str = "<!-- figures:begin -->";
/// The line that closes it.
pub(crate) const END: &str = "<!-- figures:end -->";

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The document to rewrite.
    #[arg(long, default_value = "docs/benchmarks.md")]
    doc: PathBuf,
    /// The benchmark's arguments as the table's `run` column spells them,
    /// e.g. "storage --no-snapshots".
    #[arg(long)]
    run: String,
    /// When, at which commit and on what machine, e.g.
    /// "2026-12-06, 1a2b3c4, 2-core VM shared with builds".
    #[arg(long)]
    measured: String,
    /// Output files of `hostwatch-bench <run>`, one per run.
    #[arg(required = true)]
    outputs: Vec<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(&args.doc)
        .with_context(|| format!("reading {}", args.doc.display()))?;
    let outputs = args
        .outputs
        .iter()
        .map(|path| read_output(path).map(|figures| (path.clone(), figures)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rewritten = rewrite(&doc, &args.run, &args.measured, &outputs)
        .with_context(|| format!("updating {}", args.doc.display()))?;
    std::fs::write(&args.doc, rewritten)
        .with_context(|| format!("writing {}", args.doc.display()))?;
    Ok(())
}

/// One benchmark run's figures: name to value (the first word after `=`;
/// what follows, such as `target<=...`, is commentary).
type Figures = HashMap<String, String>;

fn read_output(path: &Path) -> anyhow::Result<Figures> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let figures = parse_output(&text);
    ensure!(
        !figures.is_empty(),
        "{} holds no name=value line: is it a hostwatch-bench output?",
        path.display()
    );
    Ok(figures)
}

fn parse_output(text: &str) -> Figures {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter_map(|(name, rest)| {
            let value = rest.split_whitespace().next()?;
            let name = name.trim();
            (!name.is_empty() && !name.contains(' ')).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// A row of the table: its cells, trimmed, backticks kept.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

/// The document with the rows of `run` rewritten from `outputs`.
fn rewrite(
    doc: &str,
    run: &str,
    measured: &str,
    outputs: &[(PathBuf, Figures)],
) -> anyhow::Result<String> {
    ensure!(
        !measured.contains('|') && !measured.contains('\n'),
        "--measured may not contain '|' or a line break (it is a table cell)"
    );
    let lines: Vec<&str> = doc.split_inclusive('\n').collect();
    let at = |marker: &str| {
        let found: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].trim() == marker)
            .collect();
        match found[..] {
            [i] => Ok(i),
            _ => Err(anyhow::anyhow!(
                "the document must hold the line {marker} exactly once, not {} times",
                found.len()
            )),
        }
    };
    let (begin, end) = (at(BEGIN)?, at(END)?);
    ensure!(begin < end, "{END} comes before {BEGIN}");
    let mut out = String::with_capacity(doc.len());
    let mut runs_seen = Vec::new();
    let mut matched = 0;
    let mut table_lines = 0;
    for (i, line) in lines.iter().enumerate() {
        let in_table = i > begin && i < end && line.trim_start().starts_with('|');
        if in_table {
            table_lines += 1;
        }
        // The header and its separator are not figures.
        let Some(row) = (in_table && table_lines > 2).then(|| cells(line)).flatten() else {
            out.push_str(line);
            continue;
        };
        ensure!(
            row.len() == 5,
            "line {}: a figures row has 5 cells (run, figure, target, current, measured), not {}",
            i + 1,
            row.len()
        );
        let (row_run, figure) = (unquote(row[0]), unquote(row[1]));
        if row_run != run {
            if !runs_seen.contains(&row_run) {
                runs_seen.push(row_run);
            }
            out.push_str(line);
            continue;
        }
        matched += 1;
        let mut values = Vec::with_capacity(outputs.len());
        for (path, figures) in outputs {
            let value = figures.get(figure).with_context(|| {
                format!(
                    "{} does not print {figure}, which the row of `{run}` shows",
                    path.display()
                )
            })?;
            values.push(value.as_str());
        }
        let current = current(&values).with_context(|| format!("figure {figure}"))?;
        out.push_str(&format!(
            "| {} | {} | {} | {current} | {measured} |\n",
            row[0], row[1], row[2]
        ));
    }
    if matched == 0 {
        bail!(
            "no row of the figures table has the run `{run}` (it has: {}); add its rows first",
            runs_seen
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// The cell for one figure over several runs: the value of a single run,
/// or the median followed by each run's value.
fn current(values: &[&str]) -> anyhow::Result<String> {
    if let [one] = values {
        return Ok((*one).to_owned());
    }
    let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse().ok()).collect();
    let median = match numbers {
        Some(numbers) => {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| numbers[a].total_cmp(&numbers[b]));
            let mid = values.len() / 2;
            if values.len() % 2 == 1 {
                values[order[mid]].to_owned()
            } else {
                let (a, b) = (order[mid - 1], order[mid]);
                let decimals = |v: &str| v.split_once('.').map_or(0, |(_, d)| d.len());
                let places = decimals(values[a]).max(decimals(values[b]));
                format!("{:.places$}", (numbers[a] + numbers[b]) / 2.0)
            }
        }
        None if values.iter().all(|v| *v == values[0]) => values[0].to_owned(),
        None => bail!("runs disagree on a value that is not a number: {values:?}"),
    };
    Ok(format!("{median} ({})", values.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Benchmarks\n\ntext before\n\n<!-- figures:begin -->\n| run | figure | target | current | measured |\n|---|---|---|---|---|\n| `alerts` | `latency_ms_p99` | <= 100 | 21.9 | 2026-11-23, a9de6f0 |\n| `storage` | `restart_ms` | <= 2000 | 1.69 s | 2026-12-04, 4578691 |\n| `alerts` | `eval_share_of_ingest_cpu_pct` | <= 5 | 2.39 | 2026-11-23, a9de6f0 |\n<!-- figures:end -->\n\ntext after\n";

    fn output(text: &str) -> (PathBuf, Figures) {
        (PathBuf::from("run.txt"), parse_output(text))
    }

    #[test]
    fn rewrites_the_rows_of_one_run_from_bench_output() {
        let runs = [
            "# a comment=ignored\neval_share_of_ingest_cpu_pct=6.10\nlatency_ms_p99=20.5\nhost_down_hosts=20\n",
            "eval_share_of_ingest_cpu_pct=5.80\nlatency_ms_p99=30.1\n",
            "eval_share_of_ingest_cpu_pct=5.95\nlatency_ms_p99=25.0 (over 400 crossings)\n",
        ]
        .map(output);
        let doc = rewrite(DOC, "alerts", "2026-12-06, 1a2b3c4, 2-core VM", &runs).unwrap();
        assert!(doc.contains(
            "| `alerts` | `latency_ms_p99` | <= 100 | 25.0 (20.5, 30.1, 25.0) | 2026-12-06, 1a2b3c4, 2-core VM |\n"
        ));
        assert!(doc.contains(
            "| `alerts` | `eval_share_of_ingest_cpu_pct` | <= 5 | 5.95 (6.10, 5.80, 5.95) | 2026-12-06, 1a2b3c4, 2-core VM |\n"
        ));
        // Another run's row and everything outside the table stay as they were.
        assert!(
            doc.contains("| `storage` | `restart_ms` | <= 2000 | 1.69 s | 2026-12-04, 4578691 |\n")
        );
        assert!(doc.starts_with("# Benchmarks\n\ntext before\n\n<!-- figures:begin -->\n| run |"));
        assert!(doc.ends_with("<!-- figures:end -->\n\ntext after\n"));
        assert_eq!(doc.lines().count(), DOC.lines().count());
    }

    #[test]
    fn one_run_gives_its_value_and_two_their_mean() {
        assert_eq!(current(&["1292048"]).unwrap(), "1292048");
        assert_eq!(current(&["1.5", "2.25"]).unwrap(), "1.88 (1.5, 2.25)");
        assert_eq!(current(&["true", "true"]).unwrap(), "true (true, true)");
        assert!(current(&["true", "false"]).is_err());
    }

    #[test]
    fn a_figure_the_output_lacks_is_an_error_naming_it() {
        let runs = [output("latency_ms_p99=20.5\n")];
        let e = rewrite(DOC, "alerts", "today", &runs).unwrap_err();
        assert!(
            format!("{e:#}").contains("eval_share_of_ingest_cpu_pct"),
            "{e:#}"
        );
    }

    #[test]
    fn a_run_without_rows_or_a_document_without_markers_is_refused() {
        let runs = [output("restart_ms=1500\n")];
        let e = rewrite(DOC, "agent", "today", &runs).unwrap_err();
        assert!(format!("{e:#}").contains("`alerts`, `storage`"), "{e:#}");
        let e = rewrite("# no table\n", "storage", "today", &runs).unwrap_err();
        assert!(format!("{e:#}").contains(BEGIN), "{e:#}");
        let e = rewrite(DOC, "storage", "a | b", &runs).unwrap_err();
        assert!(format!("{e:#}").contains("--measured"), "{e:#}");
    }

    #[test]
    fn the_command_rewrites_a_document_from_output_files() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("benchmarks.md");
        std::fs::write(&doc, DOC).unwrap();
        let out = dir.path().join("storage.txt");
        std::fs::write(&out, "restart_ms=1500 target<=2000\n").unwrap();
        run(Args {
            doc: doc.clone(),
            run: "storage".to_owned(),
            measured: "2026-12-06, 1a2b3c4".to_owned(),
            outputs: vec![out],
        })
        .unwrap();
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(
            text.contains("| `storage` | `restart_ms` | <= 2000 | 1500 | 2026-12-06, 1a2b3c4 |\n")
        );
    }

    /// The document in the repository keeps a table this command can rewrite.
    #[test]
    fn docs_benchmarks_md_holds_a_well_formed_figures_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let begin = doc.find(BEGIN).expect("begin marker");
        let end = doc.find(END).expect("end marker");
        let rows: Vec<Vec<&str>> = doc[begin..end]
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| cells(l).unwrap())
            .collect();
        assert!(!rows.is_empty());
        for row in &rows {
            assert_eq!(row.len(), 5, "{row:?}");
            assert!(
                row[0].starts_with('`') && row[1].starts_with('`'),
                "{row:?}"
            );
        }
    }
}
