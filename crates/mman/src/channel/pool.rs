//! The slot pool of a [`Channel`](super::Channel): fixed-size slots in the channel's shared
//! memory for large messages, loaned by a sender, filled, sent, read by the receiver and
//! given back. Only the slot's index and length pass through the ring, and slots are
//! loaned most-recently-freed first, so the few a conversation uses stay in the caches.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Write;
//! use mman::channel::Options;
//! // 4 slots of 1 MiB, used for messages of 32 KiB and more (the defaults).
//! let chan = Options::new().pool(4, 1 << 20).pool_threshold(32 * 1024).anonymous()?;
//! let (mut tx, mut rx) = (chan.sender()?, chan.receiver()?);
//! let mut loan = tx.loan(100_000)?; // a slot of the pool, waiting for one if need be
//! loan.write_all(&[7; 100_000])?; // or write_at; `unsafe as_mut_slice` writes in place
//! loan.send()?; // the slot's index and length go through the ring
//! let got = rx.recv_borrowed()?; // holds the slot until dropped
//! let mut first = [0u8; 8];
//! got.read_at(0, &mut first); // a copy of 8 bytes: the rest is not touched
//! assert_eq!((got.len(), first), (100_000, [7; 8]));
//! drop(got); // the slot goes back to the pool
//! tx.send(&vec![1u8; 200_000])?; // `send` uses the pool from the threshold up
//! assert_eq!(rx.recv()?.len(), 200_000);
//! # Ok(()) }
//! ```
//!
//! **Layout.** After the lanes, page-aligned: a header of one line pair per word (the free
//! clock, the event senders waiting for a slot sleep on, then one state word per slot), and
//! then the slots, each a whole number of pages.
//!
//! **Ownership.** A slot's state word says who holds it, so a slot is only ever written or
//! read by one party and a dead party's slots can be taken back:
//! * `FREE(stamp)`: in the pool; the stamp (from the free clock) orders the slots by when
//!   they were freed, and a loan takes the free slot with the largest.
//! * `SENDER(lane, tag)`: loaned by the sender of `lane` whose claim is `tag` (its owner
//!   word's PID and claim count), filled, and then sent: a sent slot stays in this state
//!   until the receiver takes it. The ring record names the slot, its length and this
//!   exact state word.
//! * `RECEIVER(tag)`: taken by the receiver whose claim is `tag` (compare-and-swap from the
//!   state the record names: a record naming anything else is [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted)),
//!   which publishes its position past the record at once, reads, and gives the slot back
//!   (`FREE`, a new stamp; a waiting sender is woken).
//!
//! **Taking back.** A loan that finds no free slot looks for slots whose holder is gone: a
//! holder whose owner word now holds another claim (or none) left or was replaced; one
//! whose word is unchanged is asked about with the kernel's lock on it (see `wait`), once
//! per 50 ms slice of waiting, so a slot held by a party that died returns within 100 ms.
//! A gone sender's slot is left alone while a record naming it waits in its lane (the
//! receiver will take it); a gone receiver's slot is free at once (it had moved past the
//! record) — unless the record at a lane's published position names it: that receiver
//! died between taking the slot and moving past the record, and the next receiver to
//! attach gives the slot back and moves past the record (the message went with the
//! receiver that took it). Only the party whose tag a state holds writes that state again, so a
//! compare-and-swap from a gone party's state cannot take a slot someone holds now.
//!
//! **Soundness.** A peer can write the pool, so the safe calls reach slots by copy (aligned
//! 8-byte atomics, the crate's one scheme): [`Loan::write_at`], `Write` on a [`Loan`],
//! [`Borrowed::read_at`], `Read` on a [`Borrowed`], [`Receiver::recv`] (into a `Vec`).
//! Direct slices are `unsafe fn`s ([`Loan::as_mut_slice`], [`Borrowed::as_slice`]) whose
//! callers vouch, as for the ring's in-place calls, that nothing but mman's endpoints
//! writes the channel's memory. Indices, lengths and states read from the region are
//! checked against the configuration kept in this process before use: garbage makes an
//! operation fail with [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted), never touch memory outside the pool.
//!
//! [`Receiver::recv`]: super::Receiver::recv

use std::sync::atomic::Ordering;

use super::lanes::{corrupted, Layout, KIND_POOL};
use super::region::{Region, LINE};

mod borrowed;
mod loan;

pub use borrowed::Borrowed;
pub use loan::Loan;

/// The default number of slots.
pub const DEFAULT_SLOTS: usize = 4;
/// The default slot size: 1 MiB.
pub const DEFAULT_SLOT_SIZE: usize = 1 << 20;
/// The default threshold: messages of 32 KiB and more go through the pool.
pub const DEFAULT_THRESHOLD: usize = 32 * 1024;
/// The largest number of slots a pool may have.
pub const MAX_SLOTS: usize = 1024;
/// The largest slot: 1 GiB (a length passes through the ring as 32 bits).
pub const MAX_SLOT_SIZE: usize = 1 << 30;
const PAGE: usize = 4096;

const STATE_FREE: u64 = 0;
const STATE_SENDER: u64 = 1;
const STATE_RECEIVER: u64 = 2;

/// A pool's validated configuration: `slots` slots of `slot_size` bytes (no pool: 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PoolShape {
    pub slots: usize,
    pub slot_size: usize,
}

impl PoolShape {
    /// Validate a configuration (a caller's, or one found in a region).
    pub fn check(slots: u64, slot_size: u64) -> Result<PoolShape, String> {
        if slots == 0 {
            return Ok(PoolShape {
                slots: 0,
                slot_size: 0,
            });
        }
        if slots > MAX_SLOTS as u64 {
            return Err(format!("a pool of {slots} slots: at most {MAX_SLOTS}"));
        }
        if slot_size == 0 || !slot_size.is_multiple_of(PAGE as u64) || slot_size > MAX_SLOT_SIZE as u64 {
            return Err(format!(
                "pool slots of {slot_size} bytes: a multiple of {PAGE} bytes, at most {MAX_SLOT_SIZE}"
            ));
        }
        Ok(PoolShape {
            slots: slots as usize,
            slot_size: slot_size as usize,
        })
    }

    /// The configuration word kept in the region (slots, then pages per slot).
    pub fn encode(self) -> u64 {
        self.slots as u64 | ((self.slot_size / PAGE) as u64) << 16
    }

    /// The configuration of a word found in a region.
    pub fn decode(word: u64) -> Result<PoolShape, String> {
        let pages = word >> 16;
        let size = pages
            .checked_mul(PAGE as u64)
            .ok_or_else(|| format!("a pool word {word:#x} of absurd slots"))?;
        PoolShape::check(word & 0xffff, size)
    }

    fn header_bytes(self) -> usize {
        ((2 + self.slots) * LINE * 8).next_multiple_of(PAGE)
    }

    /// The bytes the pool takes (its header and its slots).
    pub fn len(self) -> usize {
        if self.slots == 0 {
            return 0;
        }
        self.header_bytes() + self.slots * self.slot_size
    }
}

/// Where a pool lies in its region: offsets computed from the validated shape.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pool {
    /// Byte offset of the pool's header (page-aligned).
    base: usize,
    pub shape: PoolShape,
}

/// A state word's holder: who may write it next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free(u64),
    Sender { lane: usize, tag: u64 },
    Receiver { tag: u64 },
    Garbage,
}

fn parse(word: u64) -> State {
    match word & 3 {
        STATE_FREE => State::Free(word >> 2),
        STATE_SENDER => State::Sender {
            lane: (word >> 2 & 0x3f) as usize,
            tag: word >> 8,
        },
        STATE_RECEIVER if (word >> 2) & 0x3f == 0 => State::Receiver { tag: word >> 8 },
        _ => State::Garbage,
    }
}

/// A party's tag: its owner word's PID (22 bits: Linux PIDs stay below 2^22) and claim
/// count (31 bits). Never 0 for an owner word that is not 0.
pub(super) fn tag_of(owner: u64) -> u64 {
    (owner & 0x3f_ffff) | ((owner >> 32) & 0x7fff_ffff) << 22
}

pub(super) fn sender_state(lane: usize, tag: u64) -> u64 {
    STATE_SENDER | (lane as u64) << 2 | tag << 8
}

pub(super) fn receiver_state(tag: u64) -> u64 {
    STATE_RECEIVER | tag << 8
}

impl Pool {
    pub fn new(layout_end: usize, shape: PoolShape) -> Pool {
        Pool {
            base: layout_end.next_multiple_of(PAGE),
            shape,
        }
    }

    /// The end of the pool (the region's length), or `layout_end` without a pool.
    pub fn end(&self, layout_end: usize) -> usize {
        if self.shape.slots == 0 {
            layout_end
        } else {
            self.base + self.shape.len()
        }
    }

    pub fn exists(&self) -> bool {
        self.shape.slots > 0
    }

    fn clock(&self) -> usize {
        self.base / 8
    }

    /// The word senders waiting for a slot sleep on.
    pub fn event(&self) -> usize {
        self.base / 8 + LINE
    }

    fn state(&self, k: usize) -> usize {
        self.base / 8 + (2 + k) * LINE
    }

    /// Byte offset of slot `k`'s data.
    pub fn data(&self, k: usize) -> usize {
        self.base + self.shape.header_bytes() + k * self.shape.slot_size
    }

    /// Whether some slot is free now.
    pub fn any_free(&self, region: &Region) -> bool {
        (0..self.shape.slots).any(|k| matches!(parse(self.load(region, k)), State::Free(_)))
    }

    fn load(&self, region: &Region, k: usize) -> u64 {
        region.word(self.state(k)).load(Ordering::Acquire)
    }

    /// Loan the most recently freed slot to the sender of `lane` whose tag is `tag`: its
    /// index and the state word now held. `None` when no slot is free.
    pub fn try_loan(&self, region: &Region, lane: usize, tag: u64) -> Option<(usize, u64)> {
        let held = sender_state(lane, tag);
        loop {
            let mut best: Option<(usize, u64, u64)> = None;
            for k in 0..self.shape.slots {
                let w = self.load(region, k);
                if let State::Free(stamp) = parse(w) {
                    if best.is_none_or(|(_, _, s)| stamp > s) {
                        best = Some((k, w, stamp));
                    }
                }
            }
            let (k, w, _) = best?;
            // SeqCst: a reclaimer's look at this word and the holder's lock are ordered.
            if region
                .word(self.state(k))
                .compare_exchange(w, held, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                return Some((k, held));
            }
        }
    }

    /// Give slot `k`, held as `held`, back to the pool (most recently freed) and wake a
    /// sender waiting for one. False if the state was not `held` (garbage, or a slot
    /// taken from us): nothing is changed then.
    pub fn give_back(&self, region: &Region, k: usize, held: u64) -> bool {
        let stamp = region
            .word(self.clock())
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & (u64::MAX >> 2);
        let ok = region
            .word(self.state(k))
            .compare_exchange(held, stamp << 2, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        if ok {
            super::wait::notify(region.word(self.event()));
        }
        ok
    }

    /// Whether slot `k` is still held as `held`.
    pub fn holds(&self, region: &Region, k: usize, held: u64) -> bool {
        self.load(region, k) == held
    }

    /// The receiver (tag `tag`) takes the slot a pool record of lane `lane` names: the
    /// record's 16 bytes are `index | len << 32` and the state word the sender held.
    /// Returns (index, length, state now held).
    pub fn take(
        &self,
        region: &Region,
        lane: usize,
        rec: &[u8],
        tag: u64,
    ) -> crate::Result<(usize, usize, u64)> {
        let bad = |why: String| corrupted("recv", format!("lane {lane}: a pool record {why}"));
        let Ok(rec) = <[u8; 16]>::try_from(rec) else {
            return Err(bad(format!("of {} bytes, not 16", rec.len())));
        };
        let w0 = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let expected = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
        let (k, len) = ((w0 & 0xffff_ffff) as usize, (w0 >> 32) as usize);
        if k >= self.shape.slots || len > self.shape.slot_size {
            return Err(bad(format!(
                "names slot {k} of {len} bytes, in a pool of {} slots of {} bytes",
                self.shape.slots, self.shape.slot_size
            )));
        }
        if !matches!(parse(expected), State::Sender { lane: l, .. } if l == lane) {
            return Err(bad(format!(
                "names the state {expected:#x}, not a sender of this lane"
            )));
        }
        let held = receiver_state(tag);
        region
            .word(self.state(k))
            .compare_exchange(expected, held, Ordering::SeqCst, Ordering::Relaxed)
            .map_err(|now| {
                bad(format!(
                    "names slot {k} held as {expected:#x}, but its state is {now:#x} (not the sender's)"
                ))
            })?;
        Ok((k, len, held))
    }

    /// Take back the slots of parties that are gone (see the module docs); with `look`,
    /// ask the kernel about holders whose owner word is unchanged. Returns how many came
    /// back, and whether a state word holds garbage.
    pub fn reclaim(&self, region: &Region, layout: &Layout, look: bool) -> (usize, bool) {
        let (mut freed, mut garbage) = (0, false);
        for k in 0..self.shape.slots {
            let w = self.load(region, k);
            let gone = match parse(w) {
                State::Free(_) => false,
                State::Garbage => {
                    garbage = true;
                    false
                }
                State::Receiver { tag } => {
                    gone(region, super::lanes::RX_OWNER, tag, look) && !named_at_a_tail(region, layout, k)
                }
                State::Sender { lane, tag } => {
                    if lane >= layout.lanes {
                        garbage = true;
                        false
                    } else {
                        gone(region, layout.lane(lane).owner, tag, look)
                            && !in_flight(region, layout, lane, k, w)
                    }
                }
            };
            if gone && self.give_back(region, k, w) {
                freed += 1;
            }
        }
        (freed, garbage)
    }
}

/// Whether the party whose owner word is at `word` and whose tag was `tag` is gone.
fn gone(region: &Region, word: usize, tag: u64, look: bool) -> bool {
    let owner = region.word(word).load(Ordering::SeqCst);
    if owner == 0 || tag_of(owner) != tag {
        return true;
    }
    look && !region.occupied(word)
}

/// The slot named by the pool record at `pos` in `lane`, if there is one there.
fn slot_named_at(region: &Region, layout: &Layout, lane: usize, pos: u64) -> Option<usize> {
    let l = layout.lane(lane);
    let h = region.word(layout.header_at(&l, pos)).load(Ordering::Acquire);
    match layout.parse(h, pos) {
        Some((16, KIND_POOL)) => {
            let mut rec = Vec::with_capacity(16);
            layout.get(region, &l, pos.wrapping_add(8), 16, &mut rec);
            Some((u64::from_le_bytes(rec[..8].try_into().expect("8 bytes")) & 0xffff_ffff) as usize)
        }
        _ => None,
    }
}

/// Whether the record at some lane's published tail names slot `k`: a receiver that died
/// between taking the slot and publishing its position past the record leaves it so; the
/// next receiver gives the slot back and moves past the record ([`Pool::resume`]).
fn named_at_a_tail(region: &Region, layout: &Layout, k: usize) -> bool {
    (0..layout.lanes).any(|i| {
        let pos = region.word(layout.lane(i).tail).load(Ordering::Acquire);
        pos.is_multiple_of(8) && slot_named_at(region, layout, i, pos) == Some(k)
    })
}

impl Pool {
    /// For a receiver attaching at `pos` of `lane`: if the record there names a slot that
    /// a receiver before it took (and died before moving past the record), give the slot
    /// back and return the position after the record (the message went with that
    /// receiver, as any message a receiver took does).
    pub fn resume(&self, region: &Region, layout: &Layout, lane: usize, pos: u64, tag: u64) -> Option<u64> {
        let k = slot_named_at(region, layout, lane, pos)?;
        if k >= self.shape.slots {
            return None; // garbage: the receive reports it
        }
        let w = self.load(region, k);
        match parse(w) {
            State::Receiver { tag: t } if t != tag => {
                self.give_back(region, k, w);
                Some(pos.wrapping_add(super::lanes::record_len(16)))
            }
            _ => None,
        }
    }
}

/// Whether a record naming slot `k` held as `held` waits in `lane`, from its published
/// tail (records the receiver took since no longer name a slot in a sender's state).
fn in_flight(region: &Region, layout: &Layout, lane: usize, k: usize, held: u64) -> bool {
    let l = layout.lane(lane);
    let mut pos = region.word(l.tail).load(Ordering::Acquire);
    if !pos.is_multiple_of(8) {
        return true; // garbage: keep the slot (the receiver reports the lane)
    }
    let start = pos;
    while pos.wrapping_sub(start) < layout.cap as u64 {
        let h = region.word(layout.header_at(&l, pos)).load(Ordering::Acquire);
        let Some((len, kind)) = layout.parse(h, pos) else {
            return false;
        };
        if kind == KIND_POOL && len == 16 {
            let mut rec = Vec::with_capacity(16);
            layout.get(region, &l, pos.wrapping_add(8), 16, &mut rec);
            let w0 = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            let w1 = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
            if (w0 & 0xffff_ffff) as usize == k && w1 == held {
                return true;
            }
        }
        pos = pos.wrapping_add(super::lanes::record_len(len));
    }
    false
}

/// The 16 bytes of a pool record: slot `k` of `len` bytes, held as `held`.
pub(super) fn record(k: usize, len: usize, held: u64) -> [u8; 16] {
    let mut rec = [0u8; 16];
    rec[..8].copy_from_slice(&(k as u64 | (len as u64) << 32).to_le_bytes());
    rec[8..].copy_from_slice(&held.to_le_bytes());
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_round_trip_and_refuse_garbage() {
        let s = PoolShape::check(4, 1 << 20).unwrap();
        assert_eq!(PoolShape::decode(s.encode()).unwrap(), s);
        assert_eq!(PoolShape::decode(0).unwrap().slots, 0);
        assert!(PoolShape::decode(u64::MAX).is_err());
        assert!(PoolShape::check(MAX_SLOTS as u64 + 1, 4096).is_err());
        assert!(PoolShape::check(1, 100).is_err());
        assert!(PoolShape::check(1, (MAX_SLOT_SIZE + PAGE) as u64).is_err());
    }

    #[test]
    fn states_parse_back() {
        let t = tag_of(1 << 63 | 12345 | 7 << 32);
        assert_ne!(t, 0);
        assert_eq!(parse(sender_state(63, t)), State::Sender { lane: 63, tag: t });
        assert_eq!(parse(receiver_state(t)), State::Receiver { tag: t });
        assert_eq!(parse(9 << 2), State::Free(9));
        assert_eq!(parse(3), State::Garbage);
        assert_eq!(parse(STATE_RECEIVER | 1 << 2), State::Garbage);
    }
}
