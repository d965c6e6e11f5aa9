//! `hostwatch-collector --config FILE`: see [`hostwatch_collector::cmd`].

/// jemalloc, not the system's malloc: ingest and WAL replay come in bursts
/// from many threads, and glibc keeps what a burst freed in its per-thread
/// arenas for good (seen with `hostwatch-bench storage`); jemalloc's
/// background threads hand freed pages back to the system within seconds.
/// Chosen here, in the binary, so that a program linking the collector's
/// library allocates this way only by saying so: the benchmarks and the
/// end-to-end tests' `e2e-collector` do, the `hostwatch` command (its quick
/// start included) and the tests do not. An arena per CPU is set where
/// jemalloc is built: `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    hostwatch_collector::cmd::main()
}
