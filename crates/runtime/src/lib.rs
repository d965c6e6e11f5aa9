//! What every hostwatch program (the agent, the collector, the `hostwatch`
//! command, the benchmarks) shares around its `main`: reading its
//! configuration file, logging, the shutdown signal and the exit codes.
//!
//! Layout:
//! - [`config`]: TOML configuration loading: one file, overridable by
//!   environment variables, unknown keys refused, relative paths taken
//!   from the file's directory;
//! - `logging`: [`init_tracing`], every field value with its control
//!   characters escaped;
//! - `program`: [`run_main`], a daemon's `main` once its arguments are
//!   parsed (logging, configuration, exit codes);
//! - [`metrics`]: self-monitoring: the loopback-only plain-HTTP
//!   `/metrics` port (`metrics_listen`) and this process's figures;
//! - this file: [`shutdown_signal`], [`tls_check_due`] and [`EXIT_USAGE`].

pub mod config;
mod logging;
pub mod metrics;
mod program;

pub use logging::init_tracing;
pub use program::run_main;

/// Exit status of bad usage or an unusable configuration: `EX_USAGE` of
/// sysexits.h, which hostwatch uses for every bad-input case (`EX_CONFIG`,
/// 78, is not used). Any other failure exits with 1.
pub const EXIT_USAGE: u8 = 64;

/// Completes on SIGINT (Ctrl-C) or SIGTERM (systemd stop).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested");
}

/// Completes after `every`, the `tls_check_interval` of the agent's and
/// the collector's configuration; never when it is zero (checks are off).
pub async fn tls_check_due(every: std::time::Duration) {
    if every.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(every).await;
}
