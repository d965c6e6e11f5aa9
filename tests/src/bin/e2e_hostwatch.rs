//! The operator's command, built in this crate so end-to-end tests can run
//! it as a real process (`CARGO_BIN_EXE_e2e-hostwatch`), `quickstart` included.

fn main() -> std::process::ExitCode {
    hostwatch::main()
}
