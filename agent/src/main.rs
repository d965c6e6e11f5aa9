//! `hostwatch-agent --config FILE`: see [`hostwatch_agent::cmd`].

fn main() -> std::process::ExitCode {
    hostwatch_agent::cmd::main()
}
