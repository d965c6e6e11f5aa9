//! `hostwatch hosts` and `hostwatch query`: reads from a running
//! collector, as tables for people or JSON for scripts.

use crate::UsageError;
use crate::client::ClientConfig;
use crate::units::Unit;
use clap::Args;
use hostwatch_alerting::format_rfc3339;
use hostwatch_alerting::template::format_bytes;
use hostwatch_proto::v1::query_client::QueryClient;
use hostwatch_proto::v1::{
    Aggregation, HostStatus, ListHostsRequest, Matcher, ProcessInfo, ProcessesRequest,
    RangeRequest, SeriesPoints, matcher,
};
use hostwatch_stdx::now_ms;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct QueryArgs {
    /// Metric name, e.g. host_memory_available_bytes.
    metric: String,
    /// Host id.
    #[arg(long)]
    host: String,
    /// How far back from --until, e.g. 15m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    since: Duration,
    /// End of the range (included): an RFC 3339 time
    /// (2026-11-23T10:00:00Z), a time ago (15m) or ahead (+15m), for
    /// samples of a host whose clock is ahead; default: now.
    #[arg(long, value_parser = parse_until)]
    until: Option<i64>,
    /// Label matcher NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX; repeatable.
    #[arg(long = "match", value_parser = parse_matcher)]
    matchers: Vec<Matcher>,
    /// One point per step (e.g. 1m, 1h) instead of raw samples; whole
    /// hours are served from downsampled data.
    #[arg(long, value_parser = parse_duration)]
    step: Option<Duration>,
    /// How each step folds its samples: avg, min, max, sum, count, last or
    /// rate (per second, for counters). Needs --step.
    #[arg(long, requires = "step", value_parser = parse_aggregation)]
    agg: Option<Aggregation>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_aggregation(s: &str) -> Result<Aggregation, String> {
    Ok(match s {
        "avg" => Aggregation::Avg,
        "min" => Aggregation::Min,
        "max" => Aggregation::Max,
        "sum" => Aggregation::Sum,
        "count" => Aggregation::Count,
        "last" => Aggregation::Last,
        "rate" => Aggregation::Rate,
        _ => {
            return Err(format!(
                "{s:?}: expected avg, min, max, sum, count, last or rate"
            ));
        }
    })
}

#[derive(Args)]
pub(crate) struct ProcessesArgs {
    /// Host id.
    #[arg(long)]
    host: String,
    /// A past moment: an RFC 3339 time (2026-11-23T10:00:00Z) or a time
    /// ago (15m); default: the newest snapshot.
    #[arg(long, value_parser = parse_moment)]
    at: Option<i64>,
    /// Order by cpu or memory.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "memory"])]
    sort: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Milliseconds since the Unix epoch of an RFC 3339 time or of "DURATION ago".
pub(crate) fn parse_moment(s: &str) -> Result<i64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let d = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| format!("{s:?} is before 1970"))?;
        return Ok(d.as_millis() as i64);
    }
    let ago = parse_duration(s).map_err(|_| {
        format!("{s:?}: expected an RFC 3339 time (2026-11-23T10:00:00Z) or a time ago (15m)")
    })?;
    Ok(now_ms() - ago.as_millis() as i64)
}

/// [`parse_moment`], or "+DURATION" for a time ahead of now.
fn parse_until(s: &str) -> Result<i64, String> {
    match s.strip_prefix('+') {
        Some(ahead) => Ok(now_ms() + parse_duration(ahead)?.as_millis() as i64),
        None => parse_moment(s),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 15m, 1h, 2d)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

/// A label matcher `NAME=VALUE`, `NAME!=VALUE`, `NAME=~REGEX` or
/// `NAME!~REGEX`, read as rules and silences read theirs (name and value
/// trimmed, a double-quoted value unquoted, a regex checked).
pub(crate) fn parse_matcher(s: &str) -> Result<Matcher, String> {
    hostwatch_alerting::matcher::LabelMatcher::parse(s)
        .map(hostwatch_collector::convert_matcher)
        .map_err(|e| e.to_string())
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[derive(Serialize)]
struct HostJson<'a> {
    host_id: &'a str,
    up: bool,
    connected: bool,
    clean_shutdown: bool,
    last_seen_ms: i64,
    last_seen: String,
    boot_id: &'a str,
    hostname: &'a str,
    os: String,
    kernel: &'a str,
    architecture: &'a str,
    cpu_model: &'a str,
    cpu_count: u32,
    memory_total_bytes: u64,
    agent_version: &'a str,
    /// The notAfter of the certificate the host's agent last connected
    /// with; `None` before the collector recorded one.
    certificate_expires_ms: Option<i64>,
    certificate_expires: Option<String>,
    /// When the host was revoked, if it is.
    revoked: Option<String>,
}

/// When a host's agent certificate expires (ms since the epoch; 0 when
/// the collector has not recorded it), for the hosts table: the UTC date
/// and how far off it is at `now_ms`, in whole days ("in 364 d", "expired
/// 3 d ago"; "in 0 d" is within a day); "-" when unknown.
pub(crate) fn certificate_expiry_text(expires_ms: i64, now_ms: i64) -> String {
    if expires_ms == 0 {
        return "-".to_owned();
    }
    let date = format_rfc3339(expires_ms);
    let date = date.split('T').next().unwrap_or(&date).to_owned();
    let days = (expires_ms - now_ms) / 86_400_000;
    if expires_ms > now_ms {
        format!("{date} (in {days} d)")
    } else {
        format!("{date} (expired {} d ago)", -days)
    }
}

/// `revoked` before anything else: a revoked host is refused on
/// purpose, neither up nor down (host-down rules do not page it).
pub(crate) fn host_status_word(host: &HostStatus) -> &'static str {
    match (host.revoked_ms != 0, host.up, host.clean_shutdown) {
        (true, _, _) => "revoked",
        (false, true, _) => "up",
        (false, false, true) => "stopped",
        (false, false, false) => "down",
    }
}

/// Which hosts `hostwatch hosts` lists.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct HostFilter {
    /// Only hosts whose agent certificate expires within this (7d, 12h;
    /// expired ones too); hosts whose expiry is unknown are left out.
    #[arg(long, value_parser = humantime::parse_duration)]
    expiring: Option<Duration>,
    /// Only hosts whose agent version is below this semantic version
    /// (1.4.0); hosts whose version is unknown or not one are listed too,
    /// as they may need an upgrade as well.
    #[arg(long, value_parser = parse_version)]
    version_below: Option<semver::Version>,
}

fn parse_version(text: &str) -> Result<semver::Version, String> {
    semver::Version::parse(text)
        .map_err(|e| format!("{text:?} is not a semantic version (MAJOR.MINOR.PATCH): {e}"))
}

impl HostFilter {
    /// Whether `host` is listed at `now_ms`.
    fn keeps(&self, host: &HostStatus, now_ms: i64) -> bool {
        let expiring = self.expiring.is_none_or(|within| {
            host.certificate_expires_ms != 0
                && host.certificate_expires_ms
                    <= now_ms.saturating_add(i64::try_from(within.as_millis()).unwrap_or(i64::MAX))
        });
        let below = self.version_below.as_ref().is_none_or(|limit| {
            let version = host.facts.as_ref().map(|f| f.agent_version.as_str());
            match version.map(semver::Version::parse) {
                Some(Ok(version)) => version < *limit,
                _ => true,
            }
        });
        expiring && below
    }
}

/// Every host the collector knows, all pages of `Query.ListHosts`.
pub(crate) fn fetch_hosts(config: &ClientConfig) -> anyhow::Result<Vec<HostStatus>> {
    runtime()?.block_on(async {
        let mut client = QueryClient::new(config.connect().await?);
        let mut hosts = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_hosts(ListHostsRequest {
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            hosts.extend(page.hosts);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        anyhow::Ok(hosts)
    })
}

pub(crate) fn hosts(config_path: &Path, json: bool, filter: &HostFilter) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    let hosts = fetch_hosts(&config)?;
    let now = now_ms();
    let hosts: Vec<HostStatus> = hosts.into_iter().filter(|h| filter.keeps(h, now)).collect();
    if json {
        let out: Vec<HostJson<'_>> = hosts
            .iter()
            .map(|h| {
                let facts = h.facts.clone().unwrap_or_default();
                let f = h.facts.as_ref();
                HostJson {
                    host_id: &h.host_id,
                    up: h.up,
                    connected: h.connected,
                    clean_shutdown: h.clean_shutdown,
                    last_seen_ms: h.last_seen_ms,
                    last_seen: format_rfc3339(h.last_seen_ms),
                    boot_id: &h.boot_id,
                    hostname: f.map(|f| f.hostname.as_str()).unwrap_or(""),
                    os: format!("{} {}", facts.os_name, facts.os_version)
                        .trim()
                        .to_owned(),
                    kernel: f.map(|f| f.kernel_version.as_str()).unwrap_or(""),
                    architecture: f.map(|f| f.architecture.as_str()).unwrap_or(""),
                    cpu_model: f.map(|f| f.cpu_model.as_str()).unwrap_or(""),
                    cpu_count: facts.cpu_count,
                    memory_total_bytes: facts.memory_total_bytes,
                    agent_version: f.map(|f| f.agent_version.as_str()).unwrap_or(""),
                    certificate_expires_ms: (h.certificate_expires_ms != 0)
                        .then_some(h.certificate_expires_ms),
                    certificate_expires: (h.certificate_expires_ms != 0)
                        .then(|| format_rfc3339(h.certificate_expires_ms)),
                    revoked: (h.revoked_ms != 0).then(|| format_rfc3339(h.revoked_ms)),
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut rows = vec![[
        "HOST".to_owned(),
        "STATUS".to_owned(),
        "LAST SEEN".to_owned(),
        "OS".to_owned(),
        "KERNEL".to_owned(),
        "CPUS".to_owned(),
        "MEMORY".to_owned(),
        "AGENT".to_owned(),
        "CERT EXPIRES".to_owned(),
    ]];
    for h in &hosts {
        let facts = h.facts.clone().unwrap_or_default();
        let ago = Duration::from_secs(((now - h.last_seen_ms).max(0) / 1000) as u64);
        rows.push([
            h.host_id.clone(),
            host_status_word(h).to_owned(),
            format!("{} ago", humantime::format_duration(ago)),
            format!("{} {}", facts.os_name, facts.os_version)
                .trim()
                .to_owned(),
            facts.kernel_version.clone(),
            facts.cpu_count.to_string(),
            format_bytes(facts.memory_total_bytes as f64),
            facts.agent_version.clone(),
            certificate_expiry_text(h.certificate_expires_ms, now),
        ]);
    }
    print_table(&rows);
    Ok(())
}

pub(crate) fn print_table<const N: usize>(rows: &[[String; N]]) {
    print!("{}", table(rows));
}

/// `rows` as aligned columns, one line each.
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[derive(Serialize)]
struct SeriesJson {
    metric: String,
    labels: BTreeMap<String, String>,
    points: Vec<PointJson>,
}

#[derive(Serialize)]
struct PointJson {
    timestamp_ms: i64,
    value: f64,
}

pub(crate) fn query(config_path: &Path, args: QueryArgs) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    if args.host.is_empty() {
        return Err(UsageError("--host must not be empty".to_owned()).into());
    }
    // The end is exclusive on the wire; --until includes its moment.
    let end = args.until.unwrap_or_else(now_ms) + 1;
    let start = end - args.since.as_millis() as i64;
    let mut matchers = vec![Matcher {
        name: "host".to_owned(),
        op: matcher::Op::Equal as i32,
        value: args.host.clone(),
    }];
    matchers.extend(args.matchers);
    let (step_ms, aggregation) = match args.step {
        Some(step) => (
            step.as_millis() as i64,
            args.agg.unwrap_or(Aggregation::Avg) as i32,
        ),
        None => (0, Aggregation::Unspecified as i32),
    };
    let request = RangeRequest {
        metric: args.metric.clone(),
        matchers,
        start_ms: start,
        end_ms: end,
        step_ms,
        aggregation,
    };
    let series = config
        .call(
            |channel| QueryClient::new(channel).max_decoding_message_size(256 << 20),
            |mut client| async move { client.range(request).await },
        )?
        .series;
    if args.json {
        let out: Vec<SeriesJson> = series.into_iter().map(series_json).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if series.is_empty() {
        let when = match args.until {
            Some(until) => format!(
                "in the {} up to {}",
                humantime::format_duration(args.since),
                format_rfc3339(until)
            ),
            None => format!("in the last {}", humantime::format_duration(args.since)),
        };
        eprintln!(
            "no samples of {} for host {} {when}",
            args.metric, args.host
        );
    }
    for s in &series {
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|l| format!("{}={:?}", l.name, l.value))
            .collect();
        println!("{}{{{}}}", s.metric, labels.join(","));
        let unit = folded_unit(&s.metric, aggregation);
        for (t, v) in s.timestamps_ms.iter().zip(&s.values) {
            println!("  {}  {}", format_rfc3339(*t), unit.format(*v));
        }
    }
    Ok(())
}

/// The unit of `metric`'s points folded by `aggregation` (raw samples
/// when unspecified): a rate per second, a count a plain number, the
/// others the metric's own.
fn folded_unit(metric: &str, aggregation: i32) -> Unit {
    let unit = Unit::of_metric(metric);
    match Aggregation::try_from(aggregation) {
        Ok(Aggregation::Rate) => unit.per_second(),
        Ok(Aggregation::Count) => Unit::Number,
        _ => unit,
    }
}

#[derive(Serialize)]
struct ProcessJson<'a> {
    pid: u32,
    name: &'a str,
    user: &'a str,
    cpu_cores: f64,
    rss_bytes: u64,
    start_time_ms: i64,
    command: &'a str,
}

pub(crate) fn processes(config_path: &Path, args: ProcessesArgs) -> anyhow::Result<()> {
    let config = ClientConfig::load(config_path)?;
    let request = ProcessesRequest {
        host_id: args.host.clone(),
        at_ms: args.at.unwrap_or(0),
    };
    let snapshot = config
        .call(QueryClient::new, |mut client| async move {
            client.processes(request).await
        })?
        .snapshot;
    let Some(snapshot) = snapshot else {
        if args.json {
            println!("null");
        } else {
            eprintln!("no process snapshot of host {} at that time", args.host);
        }
        return Ok(());
    };
    let mut procs: Vec<&ProcessInfo> = snapshot.processes.iter().collect();
    if args.sort == "memory" {
        procs.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes));
    } else {
        procs.sort_by(|a, b| b.cpu_cores.total_cmp(&a.cpu_cores));
    }
    if args.json {
        let out: Vec<ProcessJson<'_>> = procs
            .iter()
            .map(|p| ProcessJson {
                pid: p.pid,
                name: &p.name,
                user: &p.user,
                cpu_cores: p.cpu_cores,
                rss_bytes: p.rss_bytes,
                start_time_ms: p.start_time_ms,
                command: &p.command,
            })
            .collect();
        let doc = serde_json::json!({ "timestamp_ms": snapshot.timestamp_ms, "processes": out });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("{} at {}", args.host, format_rfc3339(snapshot.timestamp_ms));
    let mut rows = vec![[
        "PID".to_owned(),
        "USER".to_owned(),
        "CPU".to_owned(),
        "RSS".to_owned(),
        "NAME".to_owned(),
        "COMMAND".to_owned(),
    ]];
    for p in procs {
        rows.push([
            p.pid.to_string(),
            p.user.clone(),
            format!("{:.0}%", p.cpu_cores * 100.0),
            format_bytes(p.rss_bytes as f64),
            p.name.clone(),
            p.command.chars().take(80).collect(),
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn series_json(s: SeriesPoints) -> SeriesJson {
    SeriesJson {
        metric: s.metric,
        labels: s.labels.into_iter().map(|l| (l.name, l.value)).collect(),
        points: s
            .timestamps_ms
            .into_iter()
            .zip(s.values)
            .map(|(timestamp_ms, value)| PointJson {
                timestamp_ms,
                value,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_host_is_revoked_whether_up_or_down() {
        let host = |up: bool, clean_shutdown: bool, revoked_ms: i64| HostStatus {
            up,
            clean_shutdown,
            revoked_ms,
            ..Default::default()
        };
        assert_eq!(host_status_word(&host(true, false, 0)), "up");
        assert_eq!(host_status_word(&host(false, true, 0)), "stopped");
        assert_eq!(host_status_word(&host(false, false, 0)), "down");
        for (up, clean) in [(true, false), (false, true), (false, false)] {
            assert_eq!(host_status_word(&host(up, clean, 5)), "revoked");
        }
    }

    #[test]
    fn host_filters_keep_expiring_certificates_and_old_agents() {
        let day = 86_400_000;
        let host = |expires_ms: i64, version: &str| HostStatus {
            certificate_expires_ms: expires_ms,
            facts: Some(hostwatch_proto::v1::HostFacts {
                agent_version: version.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let filter = |expiring: Option<u64>, below: Option<&str>| HostFilter {
            expiring: expiring.map(|d| Duration::from_secs(d * 86_400)),
            version_below: below.map(|v| parse_version(v).unwrap()),
        };
        let now = 1_000 * day;
        let seven = filter(Some(7), None);
        assert!(seven.keeps(&host(now + 6 * day, ""), now));
        assert!(seven.keeps(&host(now - day, ""), now), "expired");
        assert!(!seven.keeps(&host(now + 8 * day, ""), now));
        assert!(!seven.keeps(&host(0, ""), now), "unknown expiry");
        let below = filter(None, Some("1.4.0"));
        assert!(below.keeps(&host(0, "1.3.9"), now));
        assert!(below.keeps(&host(0, "1.4.0-rc.1"), now));
        assert!(!below.keeps(&host(0, "1.4.0"), now));
        assert!(!below.keeps(&host(0, "1.10.0"), now));
        assert!(below.keeps(&host(0, ""), now), "unknown version");
        assert!(below.keeps(&host(0, "old"), now), "not a version");
        assert!(HostFilter::default().keeps(&host(0, ""), now));
        for bad in ["", "1", "1.2", "v1.2.3", "one"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matchers_parse_every_operator() {
        let cases = [
            ("device=eth0", "device", matcher::Op::Equal, "eth0"),
            ("device!=lo", "device", matcher::Op::NotEqual, "lo"),
            ("cpu=~[0-9]+", "cpu", matcher::Op::Regex, "[0-9]+"),
            ("cpu!~total", "cpu", matcher::Op::NotRegex, "total"),
            ("mountpoint=", "mountpoint", matcher::Op::Equal, ""),
        ];
        for (text, name, op, value) in cases {
            let m = parse_matcher(text).unwrap();
            assert_eq!(
                (m.name.as_str(), m.op, m.value.as_str()),
                (name, op as i32, value),
                "{text}"
            );
        }
        for bad in ["", "novalue", "=x", "!=x"] {
            assert!(parse_matcher(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn matchers_are_trimmed_and_unquoted_as_in_rules_and_silences() {
        for text in [" device = eth0 ", "device=\"eth0\"", "device = \"eth0\""] {
            let m = parse_matcher(text).unwrap();
            assert_eq!(
                (m.name.as_str(), m.op, m.value.as_str()),
                ("device", matcher::Op::Equal as i32, "eth0"),
                "{text:?}"
            );
        }
        let m = parse_matcher("mountpoint=~ \"/var.*\"").unwrap();
        assert_eq!(
            (m.op, m.value.as_str()),
            (matcher::Op::Regex as i32, "/var.*")
        );
    }

    #[test]
    fn moments_parse_as_times_or_durations_ago() {
        assert_eq!(parse_moment("1970-01-01T00:00:01Z").unwrap(), 1000);
        let ago = parse_moment("10m").unwrap();
        assert!((now_ms() - ago - 600_000).abs() < 5_000);
        assert!(parse_moment("yesterday-ish").is_err());
        let ahead = parse_until("+10m").unwrap();
        assert!((ahead - now_ms() - 600_000).abs() < 5_000);
        assert_eq!(parse_until("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(parse_until("+soon").is_err());
    }

    #[test]
    fn folded_points_take_the_unit_of_their_aggregation() {
        let metric = "host_network_receive_bytes_total";
        for (aggregation, unit) in [
            (Aggregation::Unspecified, Unit::Bytes),
            (Aggregation::Max, Unit::Bytes),
            (Aggregation::Rate, Unit::BytesPerSecond),
            (Aggregation::Count, Unit::Number),
        ] {
            assert_eq!(folded_unit(metric, aggregation as i32), unit);
        }
        assert_eq!(
            folded_unit("host_cpu_utilization_ratio", Aggregation::Avg as i32).format(0.0100502),
            "1.01%"
        );
    }

    #[test]
    fn durations_and_sizes_format() {
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn certificate_expiry_shows_the_date_and_whole_days() {
        assert_eq!(certificate_expiry_text(0, 5), "-");
        let day = 86_400_000;
        // 2027-01-01T12:00:00Z, seen 364 and a half days before.
        let expires = 1_798_804_800_000;
        assert_eq!(
            certificate_expiry_text(expires, expires - 364 * day - day / 2),
            "2027-01-01 (in 364 d)"
        );
        assert_eq!(
            certificate_expiry_text(expires, expires - day / 2),
            "2027-01-01 (in 0 d)"
        );
        assert_eq!(
            certificate_expiry_text(expires, expires + 3 * day + 1),
            "2027-01-01 (expired 3 d ago)"
        );
    }
}
