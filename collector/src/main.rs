//! `hostwatch-collector --config FILE`: see [`hostwatch_collector::cmd`].

fn main() -> std::process::ExitCode {
    hostwatch_collector::cmd::main()
}
