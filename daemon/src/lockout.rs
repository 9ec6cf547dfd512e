//! The door's lockout after repeated denials: a stranger offering scan after scan (or finger
//! after finger) meets the threshold's small false-accept rate once per scan, so unlimited
//! tries would open the door in the end. After `matcher.lockout_after` denials in a row, every
//! scan is denied for `matcher.lockout_s`, whatever it scores. A lockout that starts within
//! `matcher.lockout_max_s` of the end of the one before lasts twice as long as it did, up to
//! `lockout_max_s`: someone who keeps trying gets fewer and fewer tries an hour. A grant ends
//! a run of denials and the doubling. Errors (unreadable scans) neither count nor end a run.

use std::time::{Duration, Instant};

use fingerprint_common::config::MatcherConfig;
use fingerprint_common::{Decision, Verdict};

/// The lockout's state: the denials in a row so far, the lockout in force, the last one.
#[derive(Debug)]
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
