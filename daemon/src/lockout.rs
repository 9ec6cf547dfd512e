//! The door's lockout after repeated denials: a stranger offering scan after scan (or finger
//! after finger) meets the threshold's small false-accept rate once per scan, so unlimited
//! tries would open the door in the end. After `matcher.lockout_after` denials in a row, every
//! scan is denied for `matcher.lockout_s`, whatever it scores. A lockout that starts within
//! `matcher.lockout_max_s` of the end of the one before lasts twice as long as it did, up to
//! `lockout_max_s`: someone who keeps trying gets fewer and fewer tries an hour. A grant ends
//! a run of denials and the doubling. Errors (unreadable scans) neither count nor end a run.
//!
//! The state is kept in `<state_dir>/lockout.json` whenever it changes ([`SavedLockout`]), so
//! that a restart of the service (a crash, a power cut, someone pulling its plug) neither
//! ends a lockout nor forgets a run of denials.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fingerprint_common::config::{DaemonConfig, MatcherConfig};
use fingerprint_common::{Decision, Verdict};
use serde::{Deserialize, Serialize};

/// The lockout's file in the state directory.
pub const LOCKOUT_FILE: &str = "lockout.json";

/// Where the lockout's state is kept.
pub fn path(config: &DaemonConfig) -> PathBuf {
    config.state_dir.join(LOCKOUT_FILE)
}

/// The lockout's state as kept on disk, in wall-clock time (an `Instant` means nothing after a
/// restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedLockout {
    /// Denials in a row so far.
    pub denials: usize,
    /// When the lockout in force, or the last one, ends, in milliseconds since the Unix epoch,
    /// and how long it lasts, in milliseconds.
    pub last_until_ms: Option<u64>,
    pub last_ms: Option<u64>,
}

impl SavedLockout {
    /// Reads the state kept at `path`; None where there is none.
    pub fn load(path: &Path) -> std::io::Result<Option<Self>> {
        fingerprint_common::durable::read_json(path)
    }

    /// Writes it atomically (a power cut leaves the old state or the new one).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        fingerprint_common::durable::write_atomically(path, &json)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// The lockout's state: the denials in a row so far, the lockout in force, the last one.
#[derive(Clone, Debug, PartialEq)]
pub struct Lockout {
    after: usize,
    first: Duration,
    longest: Duration,
    denials: usize,
    /// When the lockout in force (or the last one) ends, and how long it lasts.
    last: Option<(Instant, Duration)>,
}

/// What applying the lockout did to a decision, for the log.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// Nothing: no lockout in force, none started.
    Nothing,
    /// This denial was the last of a run: a lockout starts, lasting this long.
    Started(Duration),
    /// A grant to this identity was withheld: the door is locked out.
    Withheld(String),
    /// A denial during a lockout.
    Denied,
}

impl Lockout {
    /// A lockout after `after` denials in a row (0: never), lasting `first`, doubling while
    /// lockouts follow each other, up to `longest`.
    pub fn new(after: usize, first: Duration, longest: Duration) -> Self {
        Self {
            after,
            first,
            longest: longest.max(first),
            denials: 0,
            last: None,
        }
    }

    /// From the configuration's `matcher.lockout_after`, `lockout_s` and `lockout_max_s`.
    pub fn from_config(matcher: &MatcherConfig) -> Self {
        Self::new(
            matcher.lockout_after,
            Duration::from_secs(matcher.lockout_s),
            Duration::from_secs(matcher.lockout_max_s),
        )
    }

    /// How much longer the lockout in force lasts at `now`; None when there is none.
    pub fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.last
            .and_then(|(until, _)| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// The state to keep, `now` being `wall` on the wall clock.
    pub fn saved(&self, now: Instant, wall: SystemTime) -> SavedLockout {
        let wall_ms = epoch_ms(wall);
        let (last_until_ms, last_ms) = match self.last {
            Some((until, lasted)) => {
                let until_ms = if until >= now {
                    wall_ms.saturating_add(millis(until - now))
                } else {
                    wall_ms.saturating_sub(millis(now - until))
                };
                (Some(until_ms), Some(millis(lasted)))
            }
            None => (None, None),
        };
        SavedLockout {
            denials: self.denials,
            last_until_ms,
            last_ms,
        }
    }

    /// Takes up a kept state, `now` being `wall` on the wall clock. What is left of a lockout
    /// is at most the longest one (a clock set back, or a damaged file, does not lock the
    /// door for longer); a last lockout too long ago for `Instant` to express is dropped.
    pub fn restore(&mut self, saved: SavedLockout, now: Instant, wall: SystemTime) {
        self.denials = saved.denials;
        let wall_ms = epoch_ms(wall);
        self.last = match (saved.last_until_ms, saved.last_ms) {
            (Some(until_ms), Some(lasted_ms)) => {
                let lasted = Duration::from_millis(lasted_ms).min(self.longest);
                let until = if until_ms >= wall_ms {
                    Some(now + Duration::from_millis(until_ms - wall_ms).min(self.longest))
                } else {
                    now.checked_sub(Duration::from_millis(wall_ms - until_ms))
                };
                until.map(|until| (until, lasted))
            }
            _ => None,
        };
    }

    /// Applies the lockout to `decision`, made at `now` (decisions in the order they were
    /// made): in a lockout, a grant becomes a denial and every denial says `locked_out`.
    pub fn apply(&mut self, decision: &mut Decision, now: Instant) -> Applied {
        if self.after == 0 {
            return Applied::Nothing;
        }
        if self.last.is_some_and(|(until, _)| now < until) {
            return match decision.decision {
                Verdict::Error => Applied::Nothing,
                Verdict::Deny => {
                    decision.locked_out = true;
                    Applied::Denied
                }
                Verdict::Grant => {
                    decision.decision = Verdict::Deny;
                    decision.locked_out = true;
                    Applied::Withheld(decision.identity.take().unwrap_or_default())
                }
            };
        }
        match decision.decision {
            Verdict::Grant => {
                self.denials = 0;
                self.last = None;
            }
            Verdict::Deny => {
                self.denials += 1;
                if self.denials >= self.after {
                    self.denials = 0;
                    let duration = match self.last {
                        Some((ended, lasted)) if now.duration_since(ended) < self.longest => {
                            (lasted * 2).min(self.longest)
                        }
                        _ => self.first,
                    };
                    self.last = Some((now + duration, duration));
                    return Applied::Started(duration);
                }
            }
            Verdict::Error => {}
        }
        Applied::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::decision;

    fn grant(who: &str) -> Decision {
        let mut d = decision(who, Verdict::Grant, None);
        d.identity = Some(who.into());
        d
    }

    #[test]
    fn a_run_of_denials_locks_the_door_and_a_grant_is_withheld_until_it_ends() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut lockout = Lockout::new(3, 30 * second, 100 * second);
        let mut deny = decision("x", Verdict::Deny, None);
        // Two denials, a grant (the run ends), then three denials: the third locks.
        assert_eq!(lockout.apply(&mut deny.clone(), t0), Applied::Nothing);
        assert_eq!(lockout.apply(&mut deny.clone(), t0), Applied::Nothing);
        let mut alice = grant("alice");
        assert_eq!(lockout.apply(&mut alice, t0), Applied::Nothing);
        assert_eq!(alice.decision, Verdict::Grant);
        assert!(!alice.locked_out);
        assert_eq!(lockout.apply(&mut deny.clone(), t0), Applied::Nothing);
        // An unreadable scan neither counts nor ends the run.
        let mut error = decision("e", Verdict::Error, Some("empty scan"));
        assert_eq!(lockout.apply(&mut error, t0), Applied::Nothing);
        assert_eq!(lockout.apply(&mut deny.clone(), t0), Applied::Nothing);
        assert_eq!(
            lockout.apply(&mut deny.clone(), t0 + second),
            Applied::Started(30 * second)
        );
        // Locked: a grant is withheld, a denial says so, an error stays an error.
        let mut bob = grant("bob");
        assert_eq!(
            lockout.apply(&mut bob, t0 + 10 * second),
            Applied::Withheld("bob".into())
        );
        assert_eq!(
            (bob.decision, bob.identity.as_deref(), bob.locked_out),
            (Verdict::Deny, None, true)
        );
        assert_eq!(lockout.apply(&mut deny, t0 + 20 * second), Applied::Denied);
        assert!(deny.locked_out);
        let mut error = decision("e", Verdict::Error, Some("empty scan"));
        assert_eq!(
            lockout.apply(&mut error, t0 + 20 * second),
            Applied::Nothing
        );
        assert!(!error.locked_out);
        // Over: grants again, and the count starts afresh.
        let mut carol = grant("carol");
        assert_eq!(
            lockout.apply(&mut carol, t0 + 31 * second),
            Applied::Nothing
        );
        assert_eq!(carol.decision, Verdict::Grant);
        assert!(!carol.locked_out);
        for _ in 0..2 {
            let mut d = decision("x", Verdict::Deny, None);
            assert_eq!(lockout.apply(&mut d, t0 + 32 * second), Applied::Nothing);
        }
    }

    #[test]
    fn lockouts_that_follow_each_other_double_up_to_the_longest() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut lockout = Lockout::new(2, 30 * second, 100 * second);
        let mut now = t0;
        // Two denials at a time, each pair right after the lockout before it ends.
        let run = |lockout: &mut Lockout, now: Instant| {
            let mut d = decision("x", Verdict::Deny, None);
            assert_eq!(lockout.apply(&mut d, now), Applied::Nothing);
            lockout.apply(&mut decision("x", Verdict::Deny, None), now)
        };
        for expected in [30, 60, 100, 100] {
            assert_eq!(run(&mut lockout, now), Applied::Started(expected * second));
            now += expected * second;
        }
        // Long after the last one ended, the next starts short again.
        now += 100 * second;
        assert_eq!(run(&mut lockout, now), Applied::Started(30 * second));
        now += 30 * second;
        assert_eq!(run(&mut lockout, now), Applied::Started(60 * second));
        // A grant after it ends stops the doubling.
        now += 60 * second;
        let mut alice = grant("alice");
        assert_eq!(lockout.apply(&mut alice, now), Applied::Nothing);
        assert_eq!(run(&mut lockout, now), Applied::Started(30 * second));
    }

    #[test]
    fn a_restart_keeps_the_lockout_and_the_run_of_denials() {
        let second = Duration::from_secs(1);
        let fresh = || Lockout::new(3, 30 * second, 100 * second);
        let (t0, wall0) = (Instant::now(), SystemTime::now());
        let deny = || decision("x", Verdict::Deny, None);
        // Two denials, then a restart 5 s later: one more denial locks.
        let mut before = fresh();
        before.apply(&mut deny(), t0);
        before.apply(&mut deny(), t0);
        let saved = before.saved(t0, wall0);
        assert_eq!(saved.denials, 2);
        let json = serde_json::to_string(&saved).expect("json");
        let saved: SavedLockout = serde_json::from_str(&json).expect("parses");
        let (t1, wall1) = (t0 + 5 * second, wall0 + 5 * second);
        let mut after = fresh();
        after.restore(saved, t1, wall1);
        assert_eq!(after.apply(&mut deny(), t1), Applied::Started(30 * second));
        // Locked for 30 s; restarted 10 s in, 20 s are left: a grant is withheld until then.
        let saved = after.saved(t1, wall1);
        let (t2, wall2) = (t1 + 10 * second, wall1 + 10 * second);
        let mut again = fresh();
        again.restore(saved, t2, wall2);
        assert_eq!(again.locked_for(t2), Some(20 * second));
        let mut alice = grant("alice");
        assert_eq!(
            again.apply(&mut alice, t2 + 19 * second),
            Applied::Withheld("alice".into())
        );
        let mut alice = grant("alice");
        assert_eq!(again.apply(&mut alice, t2 + 21 * second), Applied::Nothing);
        assert_eq!(alice.decision, Verdict::Grant);
        // The doubling survives too: locked again right after the restored one ended.
        let mut doubled = fresh();
        doubled.restore(after.saved(t1, wall1), t2, wall2);
        for _ in 0..2 {
            doubled.apply(&mut deny(), t2 + 21 * second);
        }
        assert_eq!(
            doubled.apply(&mut deny(), t2 + 21 * second),
            Applied::Started(60 * second)
        );
    }

    #[test]
    fn a_kept_lockout_never_outlasts_the_longest_one() {
        let second = Duration::from_secs(1);
        let mut lockout = Lockout::new(3, 30 * second, 100 * second);
        let (now, wall) = (Instant::now(), SystemTime::now());
        // A lockout ending a day from now (a clock set back, a damaged file).
        let day_ms = 86_400_000;
        lockout.restore(
            SavedLockout {
                denials: 0,
                last_until_ms: Some(epoch_ms(wall) + day_ms),
                last_ms: Some(day_ms),
            },
            now,
            wall,
        );
        let mut alice = grant("alice");
        assert!(matches!(
            lockout.apply(&mut alice, now + 99 * second),
            Applied::Withheld(_)
        ));
        let mut alice = grant("alice");
        assert_eq!(
            lockout.apply(&mut alice, now + 101 * second),
            Applied::Nothing
        );
        // Nothing kept: a fresh state.
        let mut fresh = Lockout::new(3, 30 * second, 100 * second);
        fresh.restore(SavedLockout::default(), now, wall);
        assert_eq!(fresh.saved(now, wall), SavedLockout::default());
    }

    #[test]
    fn the_state_file_is_written_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(LOCKOUT_FILE);
        assert_eq!(
            SavedLockout::load(&path).expect("no file is no state"),
            None
        );
        let state = SavedLockout {
            denials: 4,
            last_until_ms: Some(1_700_000_000_000),
            last_ms: Some(60_000),
        };
        state.save(&path).expect("saved");
        assert_eq!(SavedLockout::load(&path).expect("read"), Some(state));
        std::fs::write(&path, b"{not json").expect("write");
        assert!(SavedLockout::load(&path).is_err());
    }

    #[test]
    fn no_lockout_when_it_is_off() {
        let mut lockout = Lockout::new(0, Duration::from_secs(30), Duration::from_secs(900));
        let now = Instant::now();
        for _ in 0..100 {
            let mut d = decision("x", Verdict::Deny, None);
            assert_eq!(lockout.apply(&mut d, now), Applied::Nothing);
        }
        let mut alice = grant("alice");
        assert_eq!(lockout.apply(&mut alice, now), Applied::Nothing);
        assert_eq!(alice.decision, Verdict::Grant);
    }
}
