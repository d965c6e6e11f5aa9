//! Wall-clock milliseconds driven by tokio's clock.
//!
//! Sample timestamps are wall-clock milliseconds; timeouts (host down,
//! group waits, flap windows, backoff) run on tokio's clock so tests can
//! pause and advance it. [`Clock`] joins the two: it reads the wall clock
//! once and then advances with `tokio::time::Instant`.

use tokio::time::Instant;

/// Wall-clock time that advances with tokio's (pausable) clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_ms: i64,
    origin: Instant,
}

impl Clock {
    /// A clock reading the system's wall time now.
    pub fn system() -> Self {
        Clock::starting_at(hostwatch_stdx::now_ms())
    }

    /// A clock that reads `origin_ms` now (tests pick their epoch).
    pub fn starting_at(origin_ms: i64) -> Self {
        Clock {
            origin_ms,
            origin: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.origin_ms + self.origin.elapsed().as_millis() as i64
    }

    /// The tokio instant at which this clock reads `t_ms` (now if past).
    pub fn instant_at(&self, t_ms: i64) -> Instant {
        let ahead = (t_ms - self.now_ms()).max(0) as u64;
        Instant::now() + std::time::Duration::from_millis(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn advances_with_tokio_time() {
        let clock = Clock::starting_at(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now_ms(), 4_000);
        let at = clock.instant_at(5_500);
        assert_eq!(at - Instant::now(), Duration::from_millis(1_500));
    }
}
