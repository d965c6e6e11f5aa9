//! `hostwatch`: see [`hostwatch::main`].

fn main() -> std::process::ExitCode {
    hostwatch::main()
}
