//! The collector's very program, built in this crate so end-to-end tests
//! can run it as a real process (`CARGO_BIN_EXE_e2e-collector`).

fn main() -> std::process::ExitCode {
    hostwatch_collector::cmd::main()
}
