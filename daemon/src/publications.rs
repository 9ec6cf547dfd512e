//! Which decisions are on their way to the broker, and which packet id carries each: the MQTT
//! bookkeeping of the connection, kept apart from its event loop (as rumqttc keeps
//! `MqttState` apart from `EventLoop`) so that it can be tested without a broker.
//!
//! The client reports packet ids only as its event loop sends each QoS 1 publish, in the order
//! they were handed to it; the broker acknowledges them by packet id, in any order. A decision
//! leaves the outbox only when the publish that carried it is acknowledged. When the
//! connection is lost, nothing handed to the client counts any more: every decision still in
//! the outbox is published again, in outbox order, on the next connection.

use std::collections::{HashMap, VecDeque};

/// Outbox entries handed to the MQTT client in the current connection.
#[derive(Debug)]
pub struct Publications {
    window: usize,
    /// Outbox sequence numbers handed to the client, in order, until acknowledged.
    submitted: VecDeque<u64>,
    /// QoS 1 publishes handed to the client whose packet id it has not reported yet, in the
    /// order they were handed: a decision's sequence number, or None for any other message
    /// (a reply to an enrolment request, the offline status).
    awaiting_pkid: VecDeque<Option<u64>>,
    /// Packet id of each decision sent and not yet acknowledged.
    by_pkid: HashMap<u16, u64>,
}

impl Publications {
    /// At most `window` decisions unacknowledged at a time.
    pub fn new(window: usize) -> Self {
        Self {
            window,
            submitted: VecDeque::new(),
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
        }
    }

    /// A new connection (or none): whatever was handed to the client before is forgotten, so
    /// every entry left in the outbox is handed again.
    pub fn reset(&mut self) {
        self.submitted.clear();
        self.awaiting_pkid.clear();
        self.by_pkid.clear();
    }

    /// How many more decisions may be handed to the client now.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.submitted.len())
    }

    /// Whether this outbox entry was handed to the client in this connection.
    pub fn is_submitted(&self, seq: u64) -> bool {
        self.submitted.contains(&seq)
    }

    /// Outbox entry `seq` was handed to the client as a QoS 1 publish.
    pub fn decision_submitted(&mut self, seq: u64) {
        self.submitted.push_back(seq);
        self.awaiting_pkid.push_back(Some(seq));
    }

    /// A QoS 1 publish that is not a decision was handed to the client: it takes a packet id
    /// in turn, which must not be mistaken for a decision's.
    pub fn other_submitted(&mut self) {
        self.awaiting_pkid.push_back(None);
    }

    /// The client sent the next QoS 1 publish with packet id `pkid`.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(Some(seq)) = self.awaiting_pkid.pop_front() {
            self.by_pkid.insert(pkid, seq);
        }
    }

    /// The broker acknowledged `pkid`: the outbox entry it carried, if it was a decision.
    pub fn acknowledged(&mut self, pkid: u16) -> Option<u64> {
        let seq = self.by_pkid.remove(&pkid)?;
        self.submitted.retain(|s| *s != seq);
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_are_matched_to_decisions_in_the_order_they_were_handed() {
        let mut p = Publications::new(8);
        p.decision_submitted(10);
        p.other_submitted(); // an enrolment reply between two decisions
        p.decision_submitted(11);
        p.sent(1);
        p.sent(2);
        p.sent(3);
        // The broker acknowledges out of order; the reply's packet id completes nothing.
        assert_eq!(p.acknowledged(3), Some(11));
        assert_eq!(p.acknowledged(2), None);
        assert_eq!(p.acknowledged(1), Some(10));
        // A second acknowledgement of the same packet id completes nothing.
        assert_eq!(p.acknowledged(1), None);
        assert_eq!(p.room(), 8);
    }

    #[test]
    fn the_window_bounds_unacknowledged_decisions() {
        let mut p = Publications::new(2);
        p.decision_submitted(1);
        p.decision_submitted(2);
        assert_eq!(p.room(), 0);
        p.sent(7);
        assert_eq!(p.room(), 0, "sent is not acknowledged");
        assert_eq!(p.acknowledged(7), Some(1));
        assert_eq!(p.room(), 1);
        assert!(!p.is_submitted(1) && p.is_submitted(2));
    }

    #[test]
    fn after_a_reconnect_everything_unacknowledged_is_handed_again_in_order() {
        let mut p = Publications::new(4);
        for seq in [5, 6, 7] {
            p.decision_submitted(seq);
        }
        p.sent(1);
        p.sent(2);
        assert_eq!(p.acknowledged(1), Some(5));
        p.reset();
        // 6 (sent, unacknowledged) and 7 (never sent) count as not handed: the link hands the
        // outbox's entries again, oldest first.
        let outbox = [6u64, 7, 8];
        let again: Vec<u64> = outbox
            .iter()
            .copied()
            .filter(|s| !p.is_submitted(*s))
            .take(p.room())
            .collect();
        assert_eq!(again, vec![6, 7, 8]);
        // An acknowledgement of the old connection's packet id completes nothing now.
        assert_eq!(p.acknowledged(2), None);
        for seq in again {
            p.decision_submitted(seq);
        }
        // The new connection numbers its packets afresh: 2 now carries 7.
        p.sent(1);
        p.sent(2);
        p.sent(3);
        assert_eq!(p.acknowledged(2), Some(7));
        assert_eq!(p.acknowledged(1), Some(6));
        assert_eq!(p.acknowledged(3), Some(8));
    }

    #[test]
    fn a_packet_id_reported_for_nothing_awaited_is_ignored() {
        let mut p = Publications::new(4);
        p.sent(9);
        assert_eq!(p.acknowledged(9), None);
        p.decision_submitted(1);
        p.sent(3);
        assert_eq!(p.acknowledged(3), Some(1));
    }
}
