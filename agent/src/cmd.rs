//! The `hostwatch-agent --config FILE` and `hostwatch-agent enroll` commands.

use crate::AgentConfig;
use anyhow::Context;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// hostwatch's agent: samples this host and streams the samples to the
/// collector over mutual TLS.
#[derive(Parser)]
#[command(version, subcommand_negates_reqs = true)]
struct Args {
    /// Path of agent.toml.
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Enroll this host with an enrollment token: make its key, have the
    /// collector sign it, write agent.toml, agent-ca.pem, agent.pem and
    /// agent.key.
    Enroll(crate::enroll::EnrollArgs),
}

/// The binary's whole behaviour, in the library so that end-to-end tests
/// can build the same program as a real process.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // Bad usage exits 64, as a bad configuration does; --help and
            // --version succeed.
            let code = if e.use_stderr() {
                hostwatch_runtime::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let path = match (args.command, args.config) {
        (Some(Command::Enroll(enroll)), _) => return enroll_main(&enroll),
        (None, Some(path)) => path,
        // clap requires --config without a subcommand.
        (None, None) => return ExitCode::from(hostwatch_runtime::EXIT_USAGE),
    };
    hostwatch_runtime::run_main(
        "hostwatch-agent",
        || AgentConfig::load(&path),
        |config| run(config, &path),
    )
}

/// `hostwatch-agent enroll`: exit 0 enrolled, 64 bad arguments or an
/// existing key (nothing sent), 1 any other failure.
fn enroll_main(args: &crate::enroll::EnrollArgs) -> ExitCode {
    hostwatch_runtime::init_tracing("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hostwatch-agent enroll: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::enroll::enroll(args)) {
        Ok(done) => {
            let owner = match &done.owner {
                Some(user) => format!(", owned by {user}"),
                None => String::new(),
            };
            println!(
                "enrolled {} (certificate serial {}); wrote {} streaming to {} (key and certificate in {}{owner}).\n\
                 Start the agent: systemctl enable --now hostwatch-agent (or hostwatch-agent --config {}).",
                done.host_id,
                done.serial,
                done.config.display(),
                done.ingest,
                done.pki_dir.display(),
                done.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hostwatch-agent enroll: {e}");
            match e {
                crate::enroll::EnrollError::Usage(_) => {
                    ExitCode::from(hostwatch_runtime::EXIT_USAGE)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(config: AgentConfig, path: &Path) -> anyhow::Result<()> {
    crate::alloc::configure();
    // One thread: the agent's work is a few reads of /proc per interval.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        // Before anything else: without a handler, SIGHUP would end the process.
        let hangups = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        let host_id = crate::host_id(&config)?;
        let (configs, receiver) = watch::channel(config);
        tokio::spawn(reload_on_hangup(hangups, path.to_owned(), host_id, configs));
        crate::run_reloadable(receiver, hostwatch_runtime::shutdown_signal()).await?;
        Ok(())
    })
}

/// On every SIGHUP, reads the configuration file again and applies it
/// (certificates included: the stream reconnects with them); and every
/// `tls_check_interval`, applies the running configuration again if its
/// certificate, key or CA file changed (a renewal, a new CA). A file that
/// does not load, or certificates that do not, leave the running
/// configuration in place; a broken file is reported once per change.
async fn reload_on_hangup(
    mut hangups: Signal,
    path: PathBuf,
    host_id: String,
    configs: watch::Sender<AgentConfig>,
) {
    let mut seen = configs.borrow().tls.digest();
    loop {
        let check_every = configs.borrow().tls_check_interval;
        let loaded = tokio::select! {
            signal = hangups.recv() => {
                if signal.is_none() {
                    return;
                }
                AgentConfig::load(&path).map_err(crate::AgentError::from)
            }
            _ = hostwatch_runtime::tls_check_due(check_every) => {
                let current = configs.borrow().clone();
                let digest = current.tls.digest();
                if digest == seen {
                    continue;
                }
                seen = digest;
                tracing::info!(cert = %current.tls.cert.display(), "certificate files changed: reloading them");
                Ok(current)
            }
        };
        crate::service::reloading();
        let checked = loaded
            .and_then(|new| crate::check_reload(&host_id, &configs.borrow(), &new).map(|()| new));
        match checked {
            Ok(new) => {
                seen = new.tls.digest();
                configs.send_replace(new);
                tracing::info!(path = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "configuration not reloaded: the running one stays");
            }
        }
        crate::service::ready();
    }
}
