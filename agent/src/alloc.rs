//! glibc's allocator, set for an agent that allocates a tick's worth and
//! frees it again every interval, on two threads (the runtime's and the
//! `statfs` helper's).
//!
//! By default glibc gives the second thread an arena of its own, and
//! raises its trim and mmap thresholds each time a large block is freed,
//! so the pages of a tick's freed buffers stay resident between ticks.
//! Here: one arena, fixed thresholds (which turns the raising off), and
//! after each tick `malloc_trim`, which hands the free pages inside the
//! heap back to the kernel. The figures, before and after, are in
//! docs/benchmarks.md.
//!
//! Other C libraries (musl) and systems are left as they are.

/// Blocks from this size on are mapped on their own, and returned to
/// the kernel when freed; free memory at the heap's top above it is
/// returned too.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const THRESHOLD_BYTES: i32 = 128 * 1024;

/// Sets glibc's allocator up; call before any thread starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::configure();
}

/// Returns the free pages of the heap to the kernel, once per tick.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::release();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use super::THRESHOLD_BYTES;
    use nix::libc;

    pub(super) fn configure() {
        for (param, value) in [
            (libc::M_ARENA_MAX, 1),
            (libc::M_TRIM_THRESHOLD, THRESHOLD_BYTES),
            (libc::M_MMAP_THRESHOLD, THRESHOLD_BYTES),
        ] {
            // SAFETY: `mallopt` takes two integers and changes only the
            // allocator's parameters, which glibc guards with its own
            // lock; a value it refuses (returning 0) leaves its default.
            if unsafe { libc::mallopt(param, value) } == 0 {
                tracing::debug!(param, value, "mallopt refused a setting");
            }
        }
    }

    pub(super) fn release() {
        // SAFETY: `malloc_trim` takes an integer and only releases free
        // memory of the allocator's own arenas, under their locks.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// This process's anonymous resident memory, in bytes.
    fn rss_anon() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    #[test]
    fn release_returns_freed_pages_between_live_blocks() {
        configure();
        // 32 MiB in small blocks (from the heap, not mapped on their
        // own); one in 64 stays, so that the freed runs between them are
        // pages free() cannot give back by itself.
        let mut blocks: Vec<Box<[u8; 1024]>> =
            (0..32 * 1024).map(|_| Box::new([1u8; 1024])).collect();
        blocks = std::hint::black_box(blocks);
        let kept: Vec<Box<[u8; 1024]>> = blocks
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| (i % 64 == 0).then_some(b))
            .collect();
        let kept = std::hint::black_box(kept);
        let before = rss_anon();
        release();
        let after = rss_anon();
        assert!(
            before.saturating_sub(after) > 16 << 20,
            "{before} -> {after} bytes"
        );
        assert!(kept.iter().all(|b| b[1023] == 1));
    }
}
