//! The flow every hostwatch daemon's `main` follows once its arguments are
//! parsed (STYLE.md, "main.rs is thin"): logging, the configuration, then
//! the program, each failure with an exit status of its own.

use std::fmt::Display;
use std::process::ExitCode;

/// Sets up logging, loads the configuration with `load`, then runs the
/// program on it with `run`. `program` (the binary's name) starts every
/// message. An invalid configuration exits with [`crate::EXIT_USAGE`]
/// and its message, which names the key; a failed run exits with 1 and
/// its error, written with `{:#}` so that an `anyhow` error shows its
/// causes.
pub fn run_main<C, E: Display, F: Display>(
    program: &str,
    load: impl FnOnce() -> Result<C, E>,
    run: impl FnOnce(C) -> Result<(), F>,
) -> ExitCode {
    crate::init_tracing("info");
    let config = match load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{program}: invalid configuration: {e}");
            return ExitCode::from(crate::EXIT_USAGE);
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
