//! Sequence-number and timestamp unwrapping, and the reorder buffer.
//!
//! RTP sequence numbers (16 bits) and timestamps (32 bits) wrap around. The
//! unwrappers extend them to `i64` relative to the highest value seen, so a
//! packet from just before a wrap sorts before one from just after it.

use std::collections::BTreeMap;
use std::time::Duration;

/// Extends a wrapping `BITS`-bit counter to 64 bits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unwrapper<const BITS: u32> {
    highest: Option<i64>,
}

impl<const BITS: u32> Unwrapper<BITS> {
    const MODULUS: i64 = 1i64 << BITS;
    const HALF: i64 = 1i64 << (BITS - 1);

    /// The 64-bit value of `value`: the one nearest to the highest value seen.
    pub(crate) fn unwrap(&mut self, value: u32) -> i64 {
        let value = i64::from(value) & (Self::MODULUS - 1);
        let Some(highest) = self.highest else {
            self.highest = Some(value);
            return value;
        };
        let low = highest & (Self::MODULUS - 1);
        let mut delta = (value - low).rem_euclid(Self::MODULUS);
        if delta >= Self::HALF {
            delta -= Self::MODULUS;
        }
        let out = highest + delta;
        if out > highest {
            self.highest = Some(out);
        }
        out
    }
}

/// 16-bit RTP sequence number unwrapper.
pub(crate) type SeqUnwrapper = Unwrapper<16>;
/// 32-bit RTP timestamp unwrapper.
pub(crate) type TimestampUnwrapper = Unwrapper<32>;

/// Limits of the reorder buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// How long a packet may wait for a missing earlier packet before the gap is
    /// declared lost.
    pub max_delay: Duration,
    /// How many packets may wait at most; past this the gap is declared lost.
    pub max_packets: usize,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_millis(100),
            max_packets: 64,
        }
    }
}

/// What the reorder buffer did with one pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Accepted (emitted or waiting).
    Accepted,
    /// Arrived after its place had been given up: dropped.
    Late,
    /// Same sequence number already held: dropped.
    Duplicate,
    /// Far behind or ahead of the stream (a sender restart): the buffer was
    /// flushed and restarted at this packet.
    Resynced,
}

/// A bounded buffer that puts packets back in sequence order.
///
/// Packets are keyed by unwrapped sequence number. In-order packets pass
/// straight through; a gap holds later packets until it fills, the oldest
/// waiting packet is `max_delay` old, or `max_packets` are waiting.
#[derive(Debug)]
pub(crate) struct ReorderBuffer<T> {
    config: ReorderConfig,
    next: Option<i64>,
    held: BTreeMap<i64, (u64, T)>,
    ready: Vec<(i64, T)>,
    /// Sequence numbers given up as lost so far.
    pub(crate) lost: u64,
}

/// A packet further than this from the stream is a restart.
const RESYNC_DISTANCE: i64 = 1000;

impl<T> ReorderBuffer<T> {
    pub(crate) fn new(config: ReorderConfig) -> Self {
        Self {
            config,
            next: None,
            held: BTreeMap::new(),
            ready: Vec::new(),
            lost: 0,
        }
    }

    /// Adds a packet that arrived at `now_ms` (any monotonic millisecond clock).
    /// In-order packets become available from [`Self::drain`].
    pub(crate) fn push(&mut self, seq: i64, now_ms: u64, item: T) -> Pushed {
        let mut outcome = Pushed::Accepted;
        // Before the first release `next` is unknown and packets only wait, so
        // a stream whose first packets arrive out of order starts at the lowest.
        let lowest = self
            .next
            .or_else(|| self.held.first_key_value().map(|(s, _)| *s));
        if let Some(lowest) = lowest {
            let highest = self.held.last_key_value().map_or(lowest - 1, |(s, _)| *s);
            if seq + RESYNC_DISTANCE < lowest || seq > highest + RESYNC_DISTANCE {
                // The sender restarted its sequence (or jumped far ahead): a
                // new stream, not a loss.
                self.flush();
                self.next = Some(seq);
                outcome = Pushed::Resynced;
            } else if self.next.is_some_and(|next| seq < next) {
                return Pushed::Late;
            }
        }
        if self.held.contains_key(&seq) {
            return Pushed::Duplicate;
        }
        self.held.insert(seq, (now_ms, item));
        self.release_in_order();
        self.enforce_limits(now_ms);
        outcome
    }

    /// When [`Self::handle_timeout`] should next run, if packets are waiting.
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        let max_delay = u64::try_from(self.config.max_delay.as_millis()).unwrap_or(u64::MAX);
        self.held
            .values()
            .map(|(a, _)| a.saturating_add(max_delay))
            .min()
    }

    /// Gives up on gaps whose waiting packets are too old at `now_ms`.
    pub(crate) fn handle_timeout(&mut self, now_ms: u64) {
        self.enforce_limits(now_ms);
    }

    /// Releases everything held, in order, counting gaps as lost.
    pub(crate) fn flush(&mut self) {
        while let Some((seq, _)) = self.held.first_key_value() {
            let seq = *seq;
            self.skip_to(seq);
            self.release_in_order();
        }
    }

    /// Packets ready in sequence order.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, (i64, T)> {
        self.ready.drain(..)
    }

    fn release_in_order(&mut self) {
        while let Some(next) = self.next {
            match self.held.remove(&next) {
                Some((_, item)) => {
                    self.ready.push((next, item));
                    self.next = Some(next + 1);
                }
                None => break,
            }
        }
    }

    fn skip_to(&mut self, seq: i64) {
        if let Some(next) = self.next {
            if seq > next {
                self.lost += u64::try_from(seq - next).unwrap_or(0);
            }
        }
        self.next = Some(seq);
    }

    fn enforce_limits(&mut self, now_ms: u64) {
        let max_delay = u64::try_from(self.config.max_delay.as_millis()).unwrap_or(u64::MAX);
        while let Some((&first, _)) = self.held.first_key_value() {
            let too_many = self.held.len() > self.config.max_packets;
            let too_old = self
                .held
                .values()
                .any(|(a, _)| now_ms.saturating_sub(*a) >= max_delay);
            if !(too_many || too_old) {
                break;
            }
            self.skip_to(first);
            self.release_in_order();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_unwrap_across_the_16_bit_boundary() {
        let mut u = SeqUnwrapper::default();
        assert_eq!(u.unwrap(65534), 65534);
        assert_eq!(u.unwrap(65535), 65535);
        assert_eq!(u.unwrap(0), 65536);
        assert_eq!(u.unwrap(65535), 65535); // late packet from before the wrap
        assert_eq!(u.unwrap(1), 65537);
    }

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary_and_go_backwards() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(u32::MAX - 100), i64::from(u32::MAX) - 100);
        assert_eq!(u.unwrap(200), i64::from(u32::MAX) + 201);
        assert_eq!(u.unwrap(u32::MAX - 50), i64::from(u32::MAX) - 50);
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(100), 100);
        assert_eq!(u.unwrap(50), 50);
        assert_eq!(u.unwrap(u32::MAX), -1);
    }

    fn drained(b: &mut ReorderBuffer<i64>) -> Vec<i64> {
        b.drain().map(|(s, _)| s).collect()
    }

    #[test]
    fn reorders_swapped_packets() {
        let mut b = ReorderBuffer::new(ReorderConfig::default());
        b.push(9, 0, 9);
        b.push(8, 1, 8);
        // the start waits one delay, so the first packets may come in any order
        assert!(drained(&mut b).is_empty());
        assert_eq!(b.deadline_ms(), Some(100));
        b.handle_timeout(100);
        assert_eq!(drained(&mut b), vec![8, 9]);
        for s in [10, 12, 11, 13] {
            b.push(s, 101, s);
        }
        assert_eq!(drained(&mut b), vec![10, 11, 12, 13]);
        assert_eq!(b.lost, 0);
        assert_eq!(b.deadline_ms(), None);
    }

    #[test]
    fn gives_up_on_a_gap_after_the_delay_and_drops_the_late_packet() {
        let mut b = ReorderBuffer::new(ReorderConfig::default());
        b.push(0, 0, 0);
        b.handle_timeout(100);
        assert_eq!(drained(&mut b), vec![0]);
        b.push(1, 100, 1);
        b.push(3, 110, 3);
        assert_eq!(drained(&mut b), vec![1]);
        b.handle_timeout(150);
        assert!(drained(&mut b).is_empty());
        b.handle_timeout(210);
        assert_eq!(drained(&mut b), vec![3]);
        assert_eq!(b.lost, 1);
        assert_eq!(b.push(2, 220, 2), Pushed::Late);
        assert_eq!(b.push(3, 220, 3), Pushed::Late);
    }

    #[test]
    fn gives_up_on_a_gap_when_too_many_packets_wait() {
        let mut b = ReorderBuffer::new(ReorderConfig {
            max_delay: Duration::from_secs(10),
            max_packets: 4,
        });
        b.push(0, 0, 0);
        for s in 2..=6 {
            b.push(s, 0, s);
        }
        assert_eq!(drained(&mut b), vec![0, 2, 3, 4, 5, 6]);
        assert_eq!(b.lost, 1);
    }

    #[test]
    fn duplicates_are_dropped_and_a_far_older_packet_resyncs() {
        let mut b = ReorderBuffer::new(ReorderConfig::default());
        b.push(5000, 0, 1);
        b.push(5002, 0, 2);
        assert_eq!(b.push(5002, 0, 3), Pushed::Duplicate);
        assert_eq!(b.push(10, 0, 4), Pushed::Resynced);
        assert_eq!(drained(&mut b), vec![5000, 5002, 10]);
        assert_eq!(b.push(90_000, 0, 5), Pushed::Resynced);
        assert_eq!(b.push(90_001, 0, 6), Pushed::Accepted);
        assert_eq!(drained(&mut b), vec![90_000, 90_001]);
        assert_eq!(b.lost, 1);
    }
}
