//! The lanes of a [`Channel`](super::Channel): byte rings with one receiver, shared by
//! [`Sender`](super::Sender) and [`Receiver`](super::Receiver).
//!
//! A channel region holds one *lane* per sender: a ring of `capacity` bytes, the sender's
//! `head` (its position, written only by it) and the receiver's `tail`, each on its own
//! cache-line pair. SPSC is one lane; MPSC gives each sender its own lane, so senders never
//! contend with each other.
//!
//! **Records.** A record is an 8-byte header word followed by the payload, padded to 8
//! bytes. Positions grow without wrapping (64 bits) and are reduced modulo the capacity (a
//! power of two), so a payload may wrap around the end of the ring (copied in two parts)
//! but a header never does. The header holds the length (bits 0..32), the kind (bits
//! 32..36) and a *stamp* (bits 36..64): the lap of the ring the record was written in,
//! modulo 2^27, with bit 63 set (so a header word is never 0, and the stamps of two laps in
//! a row always differ). A header word of 0 means "nothing yet". Nothing reads a record's
//! padding: a record lying whole before the end of the ring has it zeroed (its last word is
//! written whole), one that wraps keeps the bytes that were there.
//!
//! **Publication.** The sender writes the payload, then a 0 at the next record's header
//! position, then the header, with `Release`. The receiver polls the header at its
//! position with `Acquire`: for a small message, the one cache line it reads carries both
//! the news and the data. The 0 written ahead guarantees that what the receiver finds
//! after a record is either 0 or the next record, never a stale word. A message becomes
//! visible only when its header is written, after it is complete: a sender killed
//! mid-message leaves nothing half-visible.
//!
//! **Room.** The receiver publishes its position lazily while messages keep coming (every
//! quarter ring), and at once when it finds the lane empty; the sender reads the
//! receiver's line only when it runs out of room.
//!
//! Positions read from the region are only ever combined with wrapping arithmetic, and
//! everything read from the region is validated before use: a header whose stamp is not
//! the lap of its position, whose length exceeds the limit, or of an unknown kind makes
//! the operation fail with [`ErrorKind::Corrupted`], touching nothing outside the lane.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::region::{Region, LINE};
use crate::error::{Error, ErrorKind, Result};

// Word indices of the lane layout.
pub(super) const RX_OWNER: usize = LINE;
pub(super) const EVER_SENDER: usize = LINE + 1;
pub(super) const EVER_RECEIVER: usize = LINE + 2;
pub(super) const RX_EVENT: usize = 2 * LINE;

/// The largest number of senders (lanes) a channel may have.
pub const MAX_SENDERS: usize = 64;

pub(super) const KIND_BYTES: u64 = 0;
pub(super) const KIND_SEALED: u64 = 1;
/// A record naming a slot of the pool (see `pool`): 16 bytes.
pub(super) const KIND_POOL: u64 = 2;

/// The word indices and data offset of lane `i`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lane {
    pub head: usize,
    pub owner: usize,
    pub tail: usize,
    pub event: usize,
    /// Byte offset of the lane's ring.
    pub data: usize,
}

/// The layout of a lanes region with `lanes` lanes of `cap` bytes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub lanes: usize,
    pub cap: usize,
    /// The slot pool after the lanes (none: 0 slots).
    pub pool: super::pool::Pool,
}

impl Layout {
    fn header_bytes(&self) -> usize {
        ((3 + 3 * self.lanes) * LINE * 8).next_multiple_of(4096)
    }

    pub fn len(&self) -> usize {
        self.pool.end(self.lanes_end())
    }

    fn lanes_end(&self) -> usize {
        self.header_bytes() + self.lanes * self.cap
    }

    /// This layout with a pool of `shape` after the lanes.
    pub fn with_pool(mut self, shape: super::pool::PoolShape) -> Layout {
        self.pool = super::pool::Pool::new(self.lanes_end(), shape);
        self
    }

    pub fn lane(&self, i: usize) -> Lane {
        let base = (3 + 3 * i) * LINE;
        Lane {
            head: base,
            owner: base + 1,
            tail: base + LINE,
            event: base + 2 * LINE,
            data: self.header_bytes() + i * self.cap,
        }
    }

    /// The largest message: the ring less one header and the zero word written ahead, and
    /// at most `u32::MAX`.
    pub fn max_message(&self) -> usize {
        (self.cap - 16).min(u32::MAX as usize)
    }

    /// Validate parameters (from a caller or from a region another process made).
    pub fn check(lanes: u64, cap: u64) -> std::result::Result<Layout, String> {
        if lanes == 0 || lanes > MAX_SENDERS as u64 {
            return Err(format!("{lanes} senders: a channel has 1 to {MAX_SENDERS}"));
        }
        if !cap.is_power_of_two() || !(64..=1 << 40).contains(&cap) {
            return Err(format!(
                "a capacity of {cap} bytes: it must be a power of two from 64 bytes to 1 TiB"
            ));
        }
        let layout = Layout {
            lanes: lanes as usize,
            cap: cap as usize,
            pool: super::pool::Pool::new(0, super::pool::PoolShape::check(0, 0)?),
        };
        if (layout.cap as u128) * (layout.lanes as u128) > isize::MAX as u128 / 2 {
            return Err(format!("{lanes} lanes of {cap} bytes do not fit in memory"));
        }
        Ok(layout)
    }

    /// The word index of the header at position `pos` of `lane`.
    #[inline(always)]
    pub fn header_at(&self, lane: &Lane, pos: u64) -> usize {
        (lane.data + (pos & (self.cap as u64 - 1)) as usize) / 8
    }

    /// The header word of a record of `len` bytes of `kind` at `pos`.
    #[inline(always)]
    pub fn header(&self, len: usize, kind: u64, pos: u64) -> u64 {
        len as u64 | kind << 32 | self.stamp(pos) << 36
    }

    /// The lap of `pos` modulo 2^27, with bit 27 set: never 0, so no header word is ever 0.
    #[inline(always)]
    fn stamp(&self, pos: u64) -> u64 {
        (pos >> self.cap.trailing_zeros()) & 0x07ff_ffff | 0x0800_0000
    }

    /// The (length, kind) of a non-zero header found at `pos`, if it is one a sender
    /// wrote there.
    #[inline(always)]
    pub fn parse(&self, h: u64, pos: u64) -> Option<(usize, u64)> {
        let (len, kind) = (h as u32 as usize, (h >> 32) & 0xf);
        (h != 0 && h >> 36 == self.stamp(pos) && kind <= KIND_POOL && len <= self.max_message())
            .then_some((len, kind))
    }

    /// Copy `msg` into the ring of `lane` at byte position `pos` (wrapping at the end).
    #[inline(always)]
    pub fn put(&self, region: &Region, lane: &Lane, pos: u64, msg: &[u8]) {
        let cap = self.cap;
        let p = (pos & (cap as u64 - 1)) as usize;
        let first = msg.len().min(cap - p);
        region.copy_in(lane.data + p, &msg[..first]);
        if first < msg.len() {
            region.copy_in(lane.data, &msg[first..]);
        }
    }

    /// Append `len` bytes from the ring of `lane` at byte position `pos` to `dst`.
    #[inline(always)]
    pub fn get(&self, region: &Region, lane: &Lane, pos: u64, len: usize, dst: &mut Vec<u8>) {
        let cap = self.cap;
        let p = (pos & (cap as u64 - 1)) as usize;
        let first = len.min(cap - p);
        region.copy_out_append(lane.data + p, first, dst);
        if first < len {
            region.copy_out_append(lane.data, len - first, dst);
        }
    }
}

/// The bytes a record of a `len`-byte payload takes.
#[inline(always)]
pub(super) fn record_len(len: usize) -> u64 {
    8 + (len as u64).next_multiple_of(8)
}

pub(super) fn corrupted(op: &'static str, what: String) -> Error {
    Error::new(ErrorKind::Corrupted, op, what)
        .with_hint("another process wrote over the channel's shared memory; the channel cannot be trusted")
}

pub(super) fn disconnected(op: &'static str, who: &str) -> Error {
    Error::new(
        ErrorKind::Disconnected,
        op,
        format!("the {who} is gone (closed, or its process died)"),
    )
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(super) enum How {
    Try,
    Block,
    Until(Instant),
}

impl How {
    pub fn deadline(self) -> Option<Instant> {
        match self {
            How::Until(d) => Some(d),
            _ => None,
        }
    }
}

pub(super) fn until(timeout: Duration) -> How {
    Instant::now().checked_add(timeout).map_or(How::Block, How::Until)
}

/// Whether the receiver is there to take messages: an error once it attached and left, or
/// (with `look`, a read of `/proc`) its process died.
pub(super) fn receiver_present(region: &Region, op: &'static str, look: bool) -> Result<()> {
    if region.is_truncated() {
        return Err(region.truncated_error(op));
    }
    let owner = region.word(RX_OWNER).load(Ordering::Acquire);
    let ever = region.word(EVER_RECEIVER).load(Ordering::Relaxed) != 0;
    // Gone: left cleanly (its word cleared), or (looking) its lock is gone with it.
    let left = owner == 0 && ever;
    let died = owner != 0 && look && !region.occupied(RX_OWNER);
    if left || died {
        return Err(disconnected(op, "receiver"));
    }
    Ok(())
}

/// Whether some sender is (or may yet be) there: an error once senders attached and all
/// left. With `look`, owners whose process died are released (their lanes drain first:
/// this is only asked when every lane is empty).
pub(super) fn senders_present(region: &Region, layout: Layout, look: bool) -> Result<()> {
    if region.is_truncated() {
        return Err(region.truncated_error("recv"));
    }
    if region.word(EVER_SENDER).load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let mut any = false;
    for i in 0..layout.lanes {
        let word = layout.lane(i).owner;
        let owner = region.word(word).load(Ordering::Acquire);
        if look {
            // The kernel's word on it: a lock held is a sender (whatever the word says).
            if region.occupied(word) {
                any = true;
            } else if owner != 0 {
                // Its process died: clear the word, so quick checks need not look again.
                let _ = region
                    .word(word)
                    .compare_exchange(owner, 0, Ordering::SeqCst, Ordering::Relaxed);
            }
            continue;
        }
        any |= owner != 0;
    }
    if any {
        Ok(())
    } else {
        Err(disconnected("recv", "last sender"))
    }
}

/// A message taken from a channel.
#[derive(Debug)]
pub enum Message {
    /// Bytes copied out of the ring (this process's own memory).
    Bytes(Vec<u8>),
    /// A memfd handed over by [`Sender::send_sealed`](super::Sender::send_sealed), mapped
    /// read-only; its seals make it immutable for everyone, so it derefs to `[u8]`.
    Sealed(crate::shm::SealedMap),
}

impl Message {
    /// The message's bytes (a view of the sealed memory, or of the copy).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Bytes(v) => v,
            Message::Sealed(m) => m,
        }
    }

    /// The bytes as a vector (a copy for a sealed message).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Message::Bytes(v) => v,
            Message::Sealed(m) => m.to_vec(),
        }
    }
}
