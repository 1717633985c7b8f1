//! [`Sender`]: the writing end of one lane (see `lanes` for the record format).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lanes::{
    corrupted, receiver_present, record_len, until, How, Lane, Layout, EVER_RECEIVER, EVER_SENDER,
    KIND_BYTES, KIND_SEALED, RX_EVENT, RX_OWNER,
};
use super::region::Slot;
use super::sealed;
use super::wait::{self, wake_all, Me, Waited, Waiting};
use super::Guarded;
use crate::error::{Error, ErrorKind, Result};

mod forms;

/// The sending end of one lane. Made by [`Channel::sender`](super::Channel::sender).
///
/// Owned by the process that attached it: used from a child created by `fork`, every
/// operation fails (attach a new sender in the child). Dropping it detaches the lane, and
/// the receiver gets [`ErrorKind::Disconnected`] once it has drained the messages sent.
pub struct Sender {
    pub(super) region: Arc<Guarded>,
    pub(super) layout: Layout,
    lane: Lane,
    pub(super) me: Me,
    /// The claim on the lane (its lock goes when the sender drops).
    slot: Slot,
    /// Our position: where the next record goes.
    head: u64,
    /// The position last stored in the lane's `head` word (where a later sender resumes).
    published: u64,
    /// The receiver's position as last read.
    tail: u64,
    pub(super) waiting: Waiting,
    /// This sender's tag in pool slot states (`pool::tag_of` its owner word).
    pub(super) tag: u64,
    /// Byte messages from this length up (and no larger than a slot) go through the pool.
    pool_min: usize,
    /// Sealed memfds handed over and not yet taken: (the position after the record, fd).
    inflight: VecDeque<(u64, crate::shm::Memfd)>,
    /// The pool slots this sender has backed in the object (see `Region::back`).
    pub(super) backed: Vec<bool>,
    /// Which lane.
    pub(super) index: usize,
    /// When the receiver's process was last looked at (async sends).
    #[cfg(feature = "async")]
    last_look: Instant,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("lane", &self.index)
            .field("head", &self.head)
            .field("tail", &self.tail)
            .finish()
    }
}

impl Sender {
    pub(super) fn attach(region: Arc<Guarded>, layout: Layout, waiting: Waiting) -> Result<Sender> {
        let me = Me::now();
        let mut taken = None;
        for i in 0..layout.lanes {
            if let Some(slot) = region.claim(layout.lane(i).owner, me.word, "attach sender")? {
                taken = Some((i, slot));
                break;
            }
        }
        let Some((i, slot)) = taken else {
            return Err(Error::new(
                ErrorKind::ResourceLimit,
                "attach sender",
                format!(
                    "all {} sender lanes of the channel are taken by live processes",
                    layout.lanes
                ),
            )
            .with_hint("make the channel with more senders (Options::senders)"));
        };
        let lane = layout.lane(i);
        let tail = region.word(lane.tail).load(Ordering::Acquire);
        let mut head = region.word(lane.head).load(Ordering::Acquire);
        // A sender that died between writing a header and storing its head may have had
        // those records taken already: the receiver's position is then ahead of the head
        // word (by at most a ring), and the lane resumes there.
        if tail.wrapping_sub(head) <= layout.cap as u64 {
            head = tail;
        }
        if head.wrapping_sub(tail) > layout.cap as u64 {
            slot.release(&region);
            return Err(corrupted(
                "attach sender",
                format!("lane {i} has head {head} more than a ring ahead of tail {tail}"),
            ));
        }
        // Records start at multiples of 8 (the fast path writes whole aligned words there).
        if !head.is_multiple_of(8) {
            slot.release(&region);
            return Err(corrupted(
                "attach sender",
                format!("lane {i} has head {head}, not a multiple of 8"),
            ));
        }
        // A sender that died between writing a header and storing its head left records
        // the receiver can see: resume after them.
        while let Some((len, _)) = layout.parse(
            region.word(layout.header_at(&lane, head)).load(Ordering::Acquire),
            head,
        ) {
            let next = head.wrapping_add(record_len(len));
            if next.wrapping_sub(tail) > layout.cap as u64 - 8 {
                break;
            }
            head = next;
        }
        region.word(lane.head).store(head, Ordering::Release);
        region.word(EVER_SENDER).store(1, Ordering::Release);
        let tag = super::pool::tag_of(region.word(lane.owner).load(Ordering::Relaxed));
        Ok(Sender {
            region,
            layout,
            lane,
            me,
            slot,
            head,
            published: head,
            tail,
            waiting,
            tag,
            pool_min: usize::MAX,
            inflight: VecDeque::new(),
            backed: vec![false; layout.pool.shape.slots],
            index: i,
            #[cfg(feature = "async")]
            last_look: Instant::now(),
        })
    }

    /// The largest message this sender sends: a pool slot's size when every size past the
    /// ring's limit goes through the pool (the threshold is at most one past it), else the
    /// ring's limit.
    pub fn max_message(&self) -> usize {
        super::largest(&self.layout, self.pool_min)
    }

    /// Send byte messages from `threshold` bytes up to a slot through the pool.
    pub(super) fn use_pool_from(&mut self, threshold: usize) {
        if self.layout.pool.exists() {
            self.pool_min = threshold;
        }
    }

    /// Whether a byte message of `len` bytes goes through the pool.
    #[inline(always)]
    fn pooled(&self, len: usize) -> bool {
        len >= self.pool_min && len <= self.layout.pool.shape.slot_size
    }

    /// Send `msg`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] once the receiver is gone (closed, or its process died:
    /// noticed within 100 ms while waiting); [`ErrorKind::InvalidInput`] for a message
    /// larger than [`max_message`](Self::max_message); [`ErrorKind::Corrupted`] if the
    /// shared state is garbage.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        if self.put_now(msg) {
            self.publish();
            return Ok(());
        }
        self.send_how(msg, How::Block).map(|_| ())
    }

    /// Send `msg` if there is room now. Returns whether it was sent.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send(&mut self, msg: &[u8]) -> Result<bool> {
        if self.put_now(msg) {
            self.publish();
            return Ok(true);
        }
        self.send_how(msg, How::Try)
    }

    /// Send `msg`, waiting at most `timeout` for room. Returns whether it was sent.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<bool> {
        self.send_how(msg, until(timeout))
    }

    /// Send a message of `len` bytes that `fill` writes in place, straight into the ring:
    /// no copy. `fill` gets the message's bytes (their old contents are unspecified); the
    /// message is published when it returns (not at all if it panics). Waits for room as
    /// [`send`](Self::send) does. A message that would wrap around the end of the ring has
    /// no contiguous room there: `fill` then writes into a buffer of this process, which
    /// is copied in.
    ///
    /// ```
    /// # fn main() -> mman::Result<()> {
    /// let chan = mman::channel::Channel::anonymous(64 * 1024)?;
    /// let (mut tx, mut rx) = (chan.sender()?, chan.receiver()?);
    /// // SAFETY: no other process can reach this channel's memory.
    /// unsafe { tx.send_in_place(5, |m| m.copy_from_slice(b"hello"))? };
    /// assert_eq!(rx.recv()?, b"hello");
    /// # Ok(()) }
    /// ```
    ///
    /// # Safety
    /// `fill` gets a plain `&mut [u8]` into the channel's shared memory: nothing else may
    /// access those bytes while it runs. mman's endpoints do not touch them until the
    /// message is published, as long as everything written into the channel's memory was
    /// written by mman's endpoints: a forged position or header, even one written before
    /// the call, can make the receiver read them meanwhile. The caller vouches for every
    /// other party that can reach the memory (the processes of a channel inherited by fork,
    /// a named object's owner, those handed the memfd, other mappings of it in this
    /// process): none writes it, other than through mman's endpoints, before `fill`
    /// returns, and none reads these bytes while `fill` runs.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub unsafe fn send_in_place(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.me.check("send")?;
        if self.pooled(len) {
            // SAFETY: the caller's contract covers the pool's slots as it covers the ring.
            return unsafe { self.send_in_place_pooled(len, fill) };
        }
        if len > self.layout.max_message() {
            return Err(self.too_large(len));
        }
        if self.receiver_left() {
            return Err(super::lanes::disconnected("send", "receiver"));
        }
        let (cap, need) = (self.layout.cap as u64, record_len(len));
        let at = self.head & (cap - 1);
        if at + need + 8 > cap {
            // No contiguous room before the end of the ring.
            let mut msg = vec![0; len];
            fill(&mut msg);
            return self.send(&msg);
        }
        if self.used() + need + 8 > cap && !self.make_room(need + 8, How::Block)? {
            unreachable!("a blocking wait for room ends with room or an error");
        }
        let offset = self.lane.data + at as usize;
        // SAFETY: the record's bytes lie past everything the receiver may read (room was
        // made for it) and are not published until `close_record`; no other process writes
        // them (the caller's contract).
        fill(unsafe { self.region.payload_mut(offset, len) });
        self.region
            .close_record(offset, self.layout.header(len, KIND_BYTES, self.head), len);
        self.head = self.head.wrapping_add(need);
        self.publish();
        Ok(())
    }

    #[inline]
    fn send_how(&mut self, msg: &[u8], how: How) -> Result<bool> {
        self.me.check("send")?;
        let sent = self.put(msg, KIND_BYTES, how)?;
        if sent {
            self.publish();
        }
        Ok(sent)
    }

    /// The fast path of a send: write `msg` as one record if nothing stands in the way
    /// (this process owns the endpoint, the message fits and has room before the end of the
    /// ring, the receiver has not left). False sends nothing: the general path then does
    /// the same checks and reports what failed.
    #[inline(always)]
    fn put_now(&mut self, msg: &[u8]) -> bool {
        let cap = self.layout.cap as u64;
        let need = record_len(msg.len());
        let at = self.head & (cap - 1);
        // The record and the zero word after it, inside the ring without wrapping.
        if msg.len() >= self.pool_min
            || msg.len() > self.layout.max_message()
            || self.used() + need + 8 > cap
            || at + need + 8 > cap
            || !self.me.is_current()
            || self.receiver_left()
        {
            return false;
        }
        let header = self.layout.header(msg.len(), KIND_BYTES, self.head);
        self.region
            .write_record(self.lane.data + at as usize, header, msg);
        self.head = self.head.wrapping_add(need);
        true
    }

    /// Whether the receiver attached and left (cleanly: its owner word cleared).
    #[inline(always)]
    pub(super) fn receiver_left(&self) -> bool {
        self.region.word(RX_OWNER).load(Ordering::Relaxed) == 0
            && self.region.word(EVER_RECEIVER).load(Ordering::Relaxed) != 0
    }

    /// Write one record at `head`, waiting for room as `how` says. The receiver can take
    /// it at once; a sleeping receiver is woken by `publish`.
    #[inline]
    pub(super) fn put(&mut self, msg: &[u8], kind: u64, how: How) -> Result<bool> {
        if kind == KIND_BYTES && self.pooled(msg.len()) {
            return self.put_pooled(msg, how);
        }
        if msg.len() > self.layout.max_message() {
            return Err(self.too_large(msg.len()));
        }
        if self.receiver_left() {
            return Err(super::lanes::disconnected("send", "receiver"));
        }
        // The record, and the zero word after it.
        let need = record_len(msg.len());
        if self.used() + need + 8 > self.layout.cap as u64 && !self.make_room(need + 8, how)? {
            return Ok(false);
        }
        let (region, layout, lane) = (&self.region, &self.layout, &self.lane);
        let at = self.head & (layout.cap as u64 - 1);
        if at + need + 8 <= layout.cap as u64 {
            region.write_record(
                lane.data + at as usize,
                layout.header(msg.len(), kind, self.head),
                msg,
            );
            self.head = self.head.wrapping_add(need);
            return Ok(true);
        }
        // Wrapping around the end of the ring: the payload in two parts.
        layout.put(region, lane, self.head.wrapping_add(8), msg);
        region
            .word(layout.header_at(lane, self.head.wrapping_add(need)))
            .store(0, Ordering::Relaxed);
        region
            .word(layout.header_at(lane, self.head))
            .store(layout.header(msg.len(), kind, self.head), Ordering::Release);
        self.head = self.head.wrapping_add(need);
        Ok(true)
    }

    /// The bytes between the receiver's position and ours (at most the capacity: the
    /// tail is checked against the head whenever it is read).
    #[inline(always)]
    fn used(&self) -> u64 {
        self.head.wrapping_sub(self.tail)
    }

    #[cold]
    fn too_large(&self, len: usize) -> Error {
        Error::new(
            ErrorKind::InvalidInput,
            "send",
            format!(
                "a message of {len} bytes is larger than the channel's limit of {} bytes",
                self.layout.max_message()
            ),
        )
        .with_hint("make the channel with a larger capacity, or hand large data over as a sealed memfd")
    }

    /// Record our position, and wake the receiver if it sleeps.
    #[inline]
    pub(super) fn publish(&mut self) {
        if self.head != self.published {
            self.region
                .word(self.lane.head)
                .store(self.head, Ordering::Release);
            self.published = self.head;
            wait::notify(self.region.word(RX_EVENT));
        }
    }

    /// Read the receiver's position; true if `need` bytes are free now.
    fn refresh(&mut self, need: u64) -> Result<bool> {
        let t = self.region.word(self.lane.tail).load(Ordering::Acquire);
        // The tail only moves forward, and never past what we wrote.
        if t.wrapping_sub(self.tail) > self.head.wrapping_sub(self.tail) {
            return Err(corrupted(
                "send",
                format!(
                    "the receiver's position {t} is outside {}..={}",
                    self.tail, self.head
                ),
            ));
        }
        self.tail = t;
        while self.inflight.front().is_some_and(|(end, _)| *end <= t) {
            self.inflight.pop_front();
        }
        Ok(self.used() + need <= self.layout.cap as u64)
    }

    #[cold]
    fn make_room(&mut self, need: u64, how: How) -> Result<bool> {
        if self.refresh(need)? {
            return Ok(true);
        }
        if let How::Try = how {
            return Ok(false);
        }
        // A sleeping receiver must know there is something to take, or it never frees room.
        self.publish();
        let mut waiting = self.waiting;
        loop {
            let waited = self.wait_tail(waiting, how.deadline(), "send", |head, t, cap| {
                head.wrapping_sub(t) + need <= cap
            })?;
            waiting = waiting.retry();
            match waited {
                // The tail moved, or turned to garbage (refresh reports that); a tail that
                // moved back meanwhile is waited for again: never a success without room.
                Waited::Ready => {
                    if self.refresh(need)? {
                        return Ok(true);
                    }
                }
                Waited::TimedOut => return Ok(false),
            }
        }
    }

    /// Wait until `enough(head, tail, cap)` holds for the receiver's published tail (or
    /// the tail is garbage: the caller's refresh reports it).
    fn wait_tail(
        &self,
        waiting: Waiting,
        deadline: Option<Instant>,
        op: &'static str,
        enough: impl Fn(u64, u64, u64) -> bool,
    ) -> Result<Waited> {
        let (region, lane) = (&self.region, self.lane);
        let (cap, head, tail0) = (self.layout.cap as u64, self.head, self.tail);
        wait::wait_for(
            region.word(lane.event),
            waiting,
            deadline,
            || {
                let t = region.word(lane.tail).load(Ordering::Acquire);
                t.wrapping_sub(tail0) > head.wrapping_sub(tail0) || enough(head, t, cap)
            },
            |look| receiver_present(region, op, look),
        )
    }

    /// Wait until the receiver has taken every message sent so far.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] if the receiver goes away first.
    pub fn flush(&mut self) -> Result<()> {
        self.me.check("flush")?;
        self.drain(None).map(|_| ())
    }

    /// Wait until the receiver took everything, or `deadline`; whether it did.
    fn drain(&mut self, deadline: Option<Instant>) -> Result<bool> {
        self.publish();
        let full = self.layout.cap as u64;
        // Room for a whole ring means the ring is empty.
        let mut waiting = self.waiting;
        while !self.refresh(full)? {
            if let Waited::TimedOut = self.wait_tail(waiting, deadline, "flush", |head, t, _| t == head)? {
                return Ok(false);
            }
            waiting = waiting.retry();
        }
        Ok(true)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.me.check("drop").is_ok() {
            self.publish();
            // Sealed memfds not taken yet must stay open until the receiver has them: wait
            // a little for it (it may be gone), then give up on them.
            if !self.inflight.is_empty() {
                let _ = self.drain(Instant::now().checked_add(Duration::from_millis(200)));
            }
            self.slot.release(&self.region);
            // A sleeping receiver may have to learn that this was the last sender.
            wake_all(self.region.word(RX_EVENT));
        }
    }
}
