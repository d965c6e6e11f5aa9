//! The agent's very program, built in this crate so end-to-end tests can
//! run it as a real process (`CARGO_BIN_EXE_e2e-agent`) and kill it.

fn main() -> std::process::ExitCode {
    hostwatch_agent::cmd::main()
}
