//! What the collector holds after the run, read as an operator reads it:
//! every sample of some hosts through PromQL (`Query.Promql`), process snapshots
//! (`Query.Processes`), host-down alerts (`Query.ListAlerts`,
//! `Query.AlertHistory`) and the store's counters (`Admin.StorageStats`).

use anyhow::{Context, bail};
use hostwatch_pki::TlsFiles;
use hostwatch_pki::transport::{ClientTarget, Keepalive, connect};
use hostwatch_proto::v1 as pb;
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::Channel;

/// Longest wait for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Hosts read by one PromQL query.
const HOSTS_PER_QUERY: usize = 100;

pub(super) struct Operator {
    query: pb::query_client::QueryClient<Channel>,
    admin: pb::admin_client::AdminClient<Channel>,
}

impl Operator {
    pub(super) async fn connect(port: u16, tls: &TlsFiles) -> anyhow::Result<Self> {
        let target = ClientTarget {
            address: format!("127.0.0.1:{port}"),
            server_name: Some("localhost".to_owned()),
            tls: tls.clone(),
            connect_timeout: Duration::from_secs(30),
            keepalive: Keepalive::default(),
        };
        let (channel, _) = connect(&target).await.context("connecting as operator")?;
        Ok(Operator {
            query: pb::query_client::QueryClient::new(channel.clone())
                .max_decoding_message_size(64 << 20),
            admin: pb::admin_client::AdminClient::new(channel),
        })
    }

    /// The timestamps of every stored series of `metrics` on `hosts`
    /// within `range_s` seconds up to `at_ms`, by host: raw samples, as
    /// PromQL's range selectors return them (`m{host=~"..."}[<range>]`).
    pub(super) async fn stored_points(
        &mut self,
        metrics: &[String],
        hosts: &[String],
        at_ms: i64,
        range_s: i64,
    ) -> anyhow::Result<HashMap<String, Vec<Vec<i64>>>> {
        let mut stored: HashMap<String, Vec<Vec<i64>>> = HashMap::new();
        for chunk in hosts.chunks(HOSTS_PER_QUERY) {
            for metric in metrics {
                // Host names are `host-<n>`: nothing to escape in a regex.
                let expr = format!("{metric}{{host=~\"{}\"}}[{range_s}s]", chunk.join("|"));
                let request = pb::PromqlRequest {
                    expr: expr.clone(),
                    when: Some(pb::promql_request::When::TimeMs(at_ms)),
                };
                let answer = tokio::time::timeout(CALL_TIMEOUT, self.query.promql(request))
                    .await
                    .with_context(|| format!("{metric}: no answer within {CALL_TIMEOUT:?}"))?
                    .with_context(|| format!("querying {metric} of {} hosts", chunk.len()))?
                    .into_inner();
                let series = match answer.result {
                    Some(pb::promql_response::Result::Matrix(matrix)) => matrix.series,
                    other => bail!("{metric}: not a range vector: {other:?}"),
                };
                for s in series {
                    let host = s
                        .labels
                        .iter()
                        .find(|l| l.name == "host")
                        .map(|l| l.value.clone())
                        .context("a series without its host label")?;
                    stored.entry(host).or_default().push(s.timestamps_ms);
                }
            }
        }
        Ok(stored)
    }

    /// Of the snapshots taken at `times` on `host`, those the collector
    /// does not return as the snapshot at that time.
    pub(super) async fn missing_snapshots(
        &mut self,
        host: &str,
        times: &[i64],
    ) -> anyhow::Result<u64> {
        let mut missing = 0;
        for &t in times {
            let request = pb::ProcessesRequest {
                host_id: host.to_owned(),
                at_ms: t,
            };
            let answer = tokio::time::timeout(CALL_TIMEOUT, self.query.processes(request))
                .await
                .context("no answer to Processes")??
                .into_inner();
            if answer.snapshot.is_none_or(|s| s.timestamp_ms != t) {
                missing += 1;
            }
        }
        Ok(missing)
    }

    /// `host_down` alerts the collector holds (pending, firing or
    /// recently resolved) raised since `since_ms`, and its `host_down`
    /// transitions since then.
    pub(super) async fn host_down_alerts(&mut self, since_ms: i64) -> anyhow::Result<(u64, u64)> {
        let request = pb::ListAlertsRequest {
            host_id: String::new(),
            include_resolved: true,
        };
        let alerts = tokio::time::timeout(CALL_TIMEOUT, self.query.list_alerts(request))
            .await
            .context("no answer to ListAlerts")??
            .into_inner()
            .alerts;
        let held = alerts
            .iter()
            .filter(|a| a.rule == "host_down")
            .filter(|a| a.active_since_ms >= since_ms || a.fired_ms >= since_ms)
            .count() as u64;
        let request = pb::AlertHistoryRequest {
            since_ms,
            host_id: String::new(),
            rule: "host_down".to_owned(),
            limit: 0,
        };
        let history = tokio::time::timeout(CALL_TIMEOUT, self.query.alert_history(request))
            .await
            .context("no answer to AlertHistory")??
            .into_inner();
        Ok((held, history.transitions.len() as u64))
    }

    pub(super) async fn storage_stats(&mut self) -> anyhow::Result<pb::StorageStatsResponse> {
        Ok(tokio::time::timeout(
            CALL_TIMEOUT,
            self.admin.storage_stats(pb::StorageStatsRequest {}),
        )
        .await
        .context("no answer to StorageStats")??
        .into_inner())
    }
}

/// The hosts to count: all of `0..agents` when they are at most `check`,
/// else `check` of them spread evenly.
pub(super) fn hosts_to_check(agents: u32, check: u32) -> Vec<u32> {
    if agents <= check {
        return (0..agents).collect();
    }
    (0..check)
        .map(|k| (u64::from(k) * u64::from(agents) / u64::from(check)) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_hosts_are_all_or_spread() {
        assert_eq!(hosts_to_check(3, 5), [0, 1, 2]);
        assert_eq!(hosts_to_check(10, 5), [0, 2, 4, 6, 8]);
        let spread = hosts_to_check(10_000, 500);
        assert_eq!(spread.len(), 500);
        assert!(spread.windows(2).all(|w| w[0] < w[1]));
        assert!(*spread.last().unwrap() < 10_000);
    }
}
