//! Log lines about misbehaving peers, at most one per interval: a flood
//! must not turn into a flood of log lines.

use std::time::Duration;
use tokio::time::Instant;

/// At most one line per this interval, per kind of event.
const INTERVAL: Duration = Duration::from_secs(10);

/// Decides which events of one kind get a log line.
pub(crate) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Throttle {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if this event is to be logged, `n` being how many were
    /// not since the last one logged; `None` if it is to be counted only.
    pub(crate) fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_of_the_others() {
        let mut throttle = Throttle::new();
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.admit(), None);
        }
        tokio::time::advance(INTERVAL).await;
        assert_eq!(throttle.admit(), Some(1000));
        assert_eq!(throttle.admit(), None);
    }
}
