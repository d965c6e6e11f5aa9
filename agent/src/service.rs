//! systemd notifications (`Type=notify`): ready, reloading, stopping, and
//! the watchdog. Without `NOTIFY_SOCKET` (not under systemd, tests) they
//! do nothing.

use sd_notify::NotifyState;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Started (or done reloading).
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Reloading the configuration; [`ready`] follows.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its timeout, forever (the caller aborts it).
/// The pings come from the agent's only runtime thread: if sampling or
/// sending hangs it, the pings stop and systemd restarts the agent.
pub(crate) async fn watchdog() {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut ticker = tokio::time::interval(timeout / 2);
    loop {
        ticker.tick().await;
        notify(&[NotifyState::Watchdog]);
    }
}
