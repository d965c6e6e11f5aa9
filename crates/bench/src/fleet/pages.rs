//! The pager: a webhook receiver on 127.0.0.1 that the collector's
//! webhook hook delivers to (Alertmanager's version 4 JSON), counting the
//! alerts it receives by rule and status.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Alerts received by (alertname, status), with their counts.
pub(super) type Counts = Vec<((String, String), u64)>;

/// Alerts received, by (alertname, status), and the hosts of firing
/// `host_down` alerts.
#[derive(Clone, Default)]
pub(super) struct Pager(Arc<Mutex<Received>>);

#[derive(Default)]
struct Received {
    alerts: BTreeMap<(String, String), u64>,
    down_hosts: Vec<String>,
    deliveries: u64,
}

impl Pager {
    /// Serves until the runtime ends; the address to deliver to.
    pub(super) async fn serve(&self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let pager = self.clone();
        let app =
            axum::Router::new().fallback(axum::routing::post(move |body: axum::body::Bytes| {
                let pager = pager.clone();
                async move {
                    pager.receive(&body);
                    axum::http::StatusCode::OK
                }
            }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }

    fn receive(&self, body: &[u8]) {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let mut received = self.0.lock().unwrap_or_else(|p| p.into_inner());
        received.deliveries += 1;
        for alert in json["alerts"].as_array().into_iter().flatten() {
            let name = alert["labels"]["alertname"].as_str().unwrap_or("?");
            let status = alert["status"].as_str().unwrap_or("?");
            *received
                .alerts
                .entry((name.to_owned(), status.to_owned()))
                .or_default() += 1;
            if name == "host_down" && status == "firing" {
                let host = alert["labels"]["host"].as_str().unwrap_or("?").to_owned();
                received.down_hosts.push(host);
            }
        }
    }

    /// Firing `host_down` alerts received, and the first few hosts.
    pub(super) fn host_down(&self) -> (u64, Vec<String>) {
        let received = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = received
            .alerts
            .get(&("host_down".to_owned(), "firing".to_owned()))
            .copied()
            .unwrap_or(0);
        (n, received.down_hosts.iter().take(5).cloned().collect())
    }

    /// Every (alertname, status) received, with counts; and deliveries.
    pub(super) fn summary(&self) -> (Counts, u64) {
        let received = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let alerts = received
            .alerts
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        (alerts, received.deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_alerts_by_rule_and_status() {
        let pager = Pager::default();
        let body = br#"{"version":"4","alerts":[
            {"status":"firing","labels":{"alertname":"host_down","host":"host-3"}},
            {"status":"resolved","labels":{"alertname":"host_down","host":"host-3"}},
            {"status":"firing","labels":{"alertname":"cpu_saturated","host":"host-1"}}]}"#;
        pager.receive(body);
        pager.receive(b"not json");
        assert_eq!(pager.host_down(), (1, vec!["host-3".to_owned()]));
        let (alerts, deliveries) = pager.summary();
        assert_eq!(deliveries, 2);
        assert_eq!(alerts.len(), 3);
    }
}
