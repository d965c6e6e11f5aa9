//! The state machine of one alert: inactive -> pending -> firing ->
//! resolved, stepped with the condition at each evaluation time.
//!
//! Times are the evaluation's own (sample time for series rules), so a
//! replayed backlog walks through the same states it would have live.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The condition does not hold (an alert in this state is not kept).
    Inactive,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    Firing,
    /// Firing ended; kept for the flap window and the resolved notification.
    Resolved,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        })
    }
}

/// The condition at one evaluation, with hysteresis: `Raise` crosses the
/// raise threshold; `Hold` is between the thresholds (keeps an active
/// alert, does not start one); `Clear` is past the clear threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Raise,
    Hold,
    Clear,
}

/// A rule's timing, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    /// Firing again within this long after resolving continues the same
    /// alert (same start, no new page).
    pub flap_window_ms: i64,
}

/// The persisted state of one alert's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub phase: Phase,
    /// Start of the current episode (pending or firing since).
    pub active_since_ms: i64,
    pub fired_ms: Option<i64>,
    /// While firing: when the condition cleared (for keep_firing_for).
    pub clearing_since_ms: Option<i64>,
    pub resolved_ms: Option<i64>,
    /// Times the alert fired again within the flap window.
    pub flaps: u32,
}

/// A change of phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from: Phase,
    pub to: Phase,
    /// Fired again within the flap window.
    pub flapping: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            phase: Phase::Inactive,
            active_since_ms: 0,
            fired_ms: None,
            clearing_since_ms: None,
            resolved_ms: None,
            flaps: 0,
        }
    }
}

impl Machine {
    /// Steps with the condition at `t_ms`; returns the change, if any.
    pub fn step(&mut self, t_ms: i64, cond: Cond, timing: &Timing) -> Option<Change> {
        let from = self.phase;
        let mut flapping = false;
        match (self.phase, cond) {
            (Phase::Inactive, Cond::Raise) => self.start(t_ms, timing),
            (Phase::Resolved, Cond::Raise) => {
                let resolved = self.resolved_ms.unwrap_or(i64::MIN);
                if t_ms - resolved < timing.flap_window_ms {
                    self.phase = Phase::Firing;
                    self.resolved_ms = None;
                    self.clearing_since_ms = None;
                    self.flaps += 1;
                    flapping = true;
                } else {
                    *self = Machine::default();
                    self.start(t_ms, timing);
                }
            }
            (Phase::Pending, Cond::Raise | Cond::Hold) => {
                if t_ms - self.active_since_ms >= timing.for_ms {
                    self.fire(t_ms);
                }
            }
            (Phase::Pending, Cond::Clear) => *self = Machine::default(),
            (Phase::Firing, Cond::Raise | Cond::Hold) => self.clearing_since_ms = None,
            (Phase::Firing, Cond::Clear) => {
                let since = *self.clearing_since_ms.get_or_insert(t_ms);
                if t_ms - since >= timing.keep_firing_for_ms {
                    self.resolve(t_ms);
                }
            }
            (Phase::Inactive | Phase::Resolved, Cond::Hold | Cond::Clear) => {}
        }
        (self.phase != from).then_some(Change {
            from,
            to: self.phase,
            flapping,
        })
    }

    /// Fires at once, whatever the phase (events, host down).
    pub fn force_fire(&mut self, t_ms: i64) -> Option<Change> {
        let from = self.phase;
        match from {
            Phase::Firing => None,
            Phase::Resolved | Phase::Inactive | Phase::Pending => {
                if from != Phase::Pending {
                    *self = Machine::default();
                    self.active_since_ms = t_ms;
                }
                self.fire(t_ms);
                Some(Change {
                    from,
                    to: Phase::Firing,
                    flapping: false,
                })
            }
        }
    }

    /// Resolves at once if active (events expiring, host back).
    pub fn force_resolve(&mut self, t_ms: i64) -> Option<Change> {
        let from = self.phase;
        match from {
            Phase::Firing => self.resolve(t_ms),
            Phase::Pending => *self = Machine::default(),
            Phase::Inactive | Phase::Resolved => return None,
        }
        Some(Change {
            from,
            to: self.phase,
            flapping: false,
        })
    }

    fn start(&mut self, t_ms: i64, timing: &Timing) {
        self.phase = Phase::Pending;
        self.active_since_ms = t_ms;
        if timing.for_ms == 0 {
            self.fire(t_ms);
        }
    }

    fn fire(&mut self, t_ms: i64) {
        self.phase = Phase::Firing;
        self.fired_ms = Some(t_ms);
        self.clearing_since_ms = None;
    }

    fn resolve(&mut self, t_ms: i64) {
        self.phase = Phase::Resolved;
        self.resolved_ms = Some(t_ms);
        self.clearing_since_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOR: Timing = Timing {
        for_ms: 30_000,
        keep_firing_for_ms: 0,
        flap_window_ms: 0,
    };

    fn run(machine: &mut Machine, timing: &Timing, steps: &[(i64, Cond)]) -> Vec<(i64, Phase)> {
        steps
            .iter()
            .filter_map(|&(t, c)| machine.step(t * 1000, c, timing).map(|ch| (t, ch.to)))
            .collect()
    }

    #[test]
    fn pending_fires_after_for_and_resets_when_cleared_early() {
        let mut m = Machine::default();
        let changes = run(
            &mut m,
            &FOR,
            &[
                (0, Cond::Raise),
                (10, Cond::Raise),
                (20, Cond::Clear),
                (30, Cond::Raise),
                (50, Cond::Hold),
                (60, Cond::Raise),
                (70, Cond::Clear),
            ],
        );
        assert_eq!(
            changes,
            [
                (0, Phase::Pending),
                (20, Phase::Inactive),
                (30, Phase::Pending),
                (60, Phase::Firing),
                (70, Phase::Resolved),
            ]
        );
        assert_eq!(m.active_since_ms, 30_000);
        assert_eq!(m.fired_ms, Some(60_000));
    }

    #[test]
    fn hysteresis_holds_a_firing_alert_but_does_not_start_one() {
        let mut m = Machine::default();
        let t = Timing::default();
        assert_eq!(run(&mut m, &t, &[(0, Cond::Hold)]), []);
        assert_eq!(
            run(
                &mut m,
                &t,
                &[
                    (1, Cond::Raise),
                    (2, Cond::Hold),
                    (3, Cond::Hold),
                    (4, Cond::Clear)
                ]
            ),
            [(1, Phase::Firing), (4, Phase::Resolved)]
        );
    }

    #[test]
    fn keep_firing_for_bridges_short_clears() {
        let t = Timing {
            keep_firing_for_ms: 60_000,
            ..Timing::default()
        };
        let mut m = Machine::default();
        let changes = run(
            &mut m,
            &t,
            &[
                (0, Cond::Raise),
                (10, Cond::Clear),
                (50, Cond::Raise),
                (60, Cond::Clear),
                (100, Cond::Clear),
                (120, Cond::Clear),
            ],
        );
        assert_eq!(changes, [(0, Phase::Firing), (120, Phase::Resolved)]);
    }

    #[test]
    fn firing_again_within_the_flap_window_continues_the_alert() {
        let t = Timing {
            flap_window_ms: 300_000,
            ..Timing::default()
        };
        let mut m = Machine::default();
        run(&mut m, &t, &[(0, Cond::Raise), (60, Cond::Clear)]);
        let change = m.step(120_000, Cond::Raise, &t).unwrap();
        assert!(change.flapping);
        assert_eq!(
            (m.phase, m.active_since_ms, m.fired_ms, m.flaps),
            (Phase::Firing, 0, Some(0), 1)
        );
        // Outside the window, a new episode starts.
        m.step(180_000, Cond::Clear, &t);
        let change = m.step(600_000, Cond::Raise, &t).unwrap();
        assert!(!change.flapping);
        assert_eq!((m.active_since_ms, m.flaps), (600_000, 0));
    }

    #[test]
    fn forced_changes_for_events() {
        let mut m = Machine::default();
        assert_eq!(m.force_resolve(5).map(|c| c.to), None);
        assert_eq!(m.force_fire(10).map(|c| c.to), Some(Phase::Firing));
        assert_eq!(m.force_fire(20), None);
        assert_eq!(m.force_resolve(30).map(|c| c.to), Some(Phase::Resolved));
        assert_eq!(
            m.force_fire(40).map(|c| (c.from, c.to)),
            Some((Phase::Resolved, Phase::Firing))
        );
        assert_eq!(m.active_since_ms, 40);
    }
}
