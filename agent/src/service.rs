//! systemd notifications (`Type=notify`): ready, reloading, stopping, and
//! the watchdog. Without `NOTIFY_SOCKET` (not under systemd, tests) they
//! do nothing; on systems other than Linux, which have no systemd, they
//! are not built.

#[cfg(target_os = "linux")]
use sd_notify::NotifyState;

#[cfg(target_os = "linux")]
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Started (or done reloading).
pub fn ready() {
    #[cfg(target_os = "linux")]
    notify(&[NotifyState::Ready]);
}

/// Reloading the configuration; [`ready`] follows.
pub fn reloading() {
    #[cfg(target_os = "linux")]
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    #[cfg(target_os = "linux")]
    notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its timeout, forever (the caller aborts it).
/// The pings come from the agent's only runtime thread: if sampling or
/// sending hangs it, the pings stop and systemd restarts the agent.
pub(crate) async fn watchdog() {
    #[cfg(target_os = "linux")]
    {
        let Some(timeout) = sd_notify::watchdog_enabled() else {
            return;
        };
        let mut ticker = tokio::time::interval(timeout / 2);
        loop {
            ticker.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    }
}
