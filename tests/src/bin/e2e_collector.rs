//! The collector's very program, built in this crate so end-to-end tests
//! can run it as a real process (`CARGO_BIN_EXE_e2e-collector`).

/// The real collector's allocator (collector/src/main.rs), since this
/// stands for it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    hostwatch_collector::cmd::main()
}
