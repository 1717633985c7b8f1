//! [`Receiver`]: the reading end of a channel's lanes (see `lanes` for the record format).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lanes::{
    corrupted, record_len, senders_present, until, How, Lane, Layout, Message, EVER_RECEIVER, KIND_BYTES,
    KIND_POOL, KIND_SEALED, RX_EVENT, RX_OWNER,
};
use super::sealed;
use super::wait::{self, wake_all, Me, Waited, Waiting};
use super::Guarded;
use crate::error::{Error, ErrorKind, Result};

mod forms;

/// How many times a blocking receive looks at a lane before taking the general path
/// (whose spin reads the clock, then sleeps).
const FAST_SPINS: u32 = 64;

/// The receiver's view of one lane.
#[derive(Clone, Copy, Debug)]
struct RxLane {
    lane: Lane,
    /// Our position: the next record to take.
    tail: u64,
    /// The position last published to the lane's `tail` word.
    published: u64,
}

/// The receiving end of a channel: one per channel. Made by
/// [`Channel::receiver`](super::Channel::receiver).
///
/// With several senders, each sender's messages arrive in the order sent; the lanes are
/// served in turn, so no sender can starve another. A receiver that dies may leave the
/// last messages it took untaken in the lanes (it publishes its position lazily): the next
/// receiver gets them again.
pub struct Receiver {
    pub(super) region: Arc<Guarded>,
    pub(super) layout: Layout,
    me: Me,
    /// This receiver's tag in pool slot states (`pool::tag_of` its owner word).
    tag: u64,
    /// The claim on the receiver's slot (its lock goes when the receiver drops).
    _slot: super::region::Slot,
    lanes: Vec<RxLane>,
    /// The lane to look at first (round robin).
    next: usize,
    waiting: Waiting,
    /// Whether a receive looks a few times before the general path: while the waiting
    /// policy's last plan spun (a peer on another CPU answers within those looks; on one
    /// CPU, or beside CPU-bound load, they only delay the sleep).
    fast_spin: bool,
    /// The largest sealed hand-off the copying receives take (see `Options::max_sealed`).
    max_sealed: usize,
    last_look: Instant,
    /// The header words a blocking wait watches, one per lane (kept to spare the wait
    /// an allocation or a fill).
    watch: Vec<usize>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

/// What `read_record` left: bytes in the buffer, or a sealed view.
enum Got {
    Bytes,
    Sealed(crate::shm::SealedMap),
}

impl Receiver {
    pub(super) fn attach(
        region: Arc<Guarded>,
        layout: Layout,
        waiting: Waiting,
        max_sealed: usize,
    ) -> Result<Receiver> {
        let me = Me::now();
        let Some(slot) = region.claim(RX_OWNER, me.word, "attach receiver")? else {
            let owner = region.word(RX_OWNER).load(Ordering::Relaxed);
            return Err(Error::new(
                ErrorKind::AddressInUse,
                "attach receiver",
                format!(
                    "the channel's receiver is process {} (alive)",
                    wait::pid_of(owner)
                ),
            )
            .with_hint("a channel has one receiver; use a broadcast channel for many"));
        };
        let lanes: Vec<RxLane> = (0..layout.lanes)
            .map(|i| {
                let lane = layout.lane(i);
                let tail = region.word(lane.tail).load(Ordering::Acquire);
                RxLane {
                    lane,
                    tail,
                    published: tail,
                }
            })
            .collect();
        // Records start at multiples of 8 (the fast path loads the header as an aligned word).
        if let Some((i, l)) = lanes.iter().enumerate().find(|(_, l)| !l.tail.is_multiple_of(8)) {
            slot.release(&region);
            return Err(corrupted(
                "attach receiver",
                format!("lane {i} has tail {}, not a multiple of 8", l.tail),
            ));
        }
        region.word(EVER_RECEIVER).store(1, Ordering::Release);
        let tag = super::pool::tag_of(region.word(RX_OWNER).load(Ordering::Relaxed));
        let mut lanes = lanes;
        for (i, l) in lanes.iter_mut().enumerate() {
            // A receiver before us died holding the slot of the record at our position.
            if let Some(next) = layout.pool.resume(&region, &layout, i, l.tail, tag) {
                region.word(l.lane.tail).store(next, Ordering::Release);
                (l.tail, l.published) = (next, next);
            }
        }
        Ok(Receiver {
            region,
            layout,
            me,
            tag,
            _slot: slot,
            lanes,
            next: 0,
            waiting,
            fast_spin: waiting.spins(),
            max_sealed,
            last_look: Instant::now(),
            watch: vec![0; layout.lanes],
        })
    }

    /// Take the next message, waiting as long as it takes. A sealed hand-off is copied
    /// out (use [`recv_message`](Self::recv_message) to keep it zero-copy), if it is no
    /// larger than the receiver's limit ([`Options::max_sealed`](super::Options::max_sealed)).
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] once every sender is gone and every message sent has
    /// been taken (a sender's death is noticed within 100 ms); [`ErrorKind::Corrupted`] if
    /// the shared state is garbage; [`ErrorKind::ResourceLimit`] for a sealed hand-off
    /// larger than the limit, which is consumed unread (nothing is mapped or copied; the
    /// next receive gets the next message).
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.recv_into(&mut buf)?;
        Ok(buf)
    }

    /// [`recv`](Self::recv) into `buf` (cleared first), reusing its allocation.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        if self.lanes.len() == 1 && self.fast_spin {
            // A short spin before the general path, reading no clock: a peer that answers
            // from another core does so well within it.
            for _ in 0..FAST_SPINS {
                if self.take_now(0, buf) {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        self.take(buf, How::Block).map(|_| ())
    }

    /// Take the next message if one is there now.
    ///
    /// # Errors
    /// As [`recv`](Self::recv): `Disconnected` when nothing is there and nobody will send.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.take(&mut buf, How::Try)?.then_some(buf))
    }

    /// Take the next message, waiting at most `timeout`; `None` when it passed.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.take(&mut buf, until(timeout))?.then_some(buf))
    }

    /// Take the next message and give `f` a view of it where it lies in the ring: no copy.
    /// Its room goes back to the sender when `f` returns (if `f` panics, the message stays
    /// for the next receive). A message that wraps around the
    /// end of the ring is given to `f` from a copy, and a sealed hand-off from its sealed
    /// view. Waits as [`recv`](Self::recv) does.
    ///
    /// ```
    /// # fn main() -> mman::Result<()> {
    /// let chan = mman::channel::Channel::anonymous(64 * 1024)?;
    /// let (mut tx, mut rx) = (chan.sender()?, chan.receiver()?);
    /// tx.send(b"hello")?;
    /// // SAFETY: no other process can reach this channel's memory.
    /// let n = unsafe { rx.recv_in_place(|m| m.len())? };
    /// assert_eq!(n, 5);
    /// # Ok(()) }
    /// ```
    ///
    /// # Safety
    /// `f` gets a plain `&[u8]` into the channel's shared memory: nothing may write those
    /// bytes while it runs. mman's sender leaves a message's bytes alone until this
    /// receiver has moved past it, as long as everything written into the channel's memory
    /// was written by mman's endpoints: a forged position or header, even one written
    /// before the call, can make the sender write over the bytes `f` reads (or this
    /// receiver hand `f` bytes the sender is still writing). The caller vouches for every
    /// other party that can reach the memory (other processes, other mappings of it in
    /// this process): none writes it, other than through mman's endpoints, before `f`
    /// returns. (The safe [`recv`](Self::recv) copies, and needs no such promise.)
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub unsafe fn recv_in_place<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.me.check("recv")?;
        if self.lanes.len() == 1 && self.fast_spin {
            // As recv_into: a short clock-free spin before the general wait.
            let l = &self.lanes[0];
            let header = self.layout.header_at(&l.lane, l.tail);
            for _ in 0..FAST_SPINS {
                if self.region.word(header).load(Ordering::Relaxed) != 0 {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let Some(i) = self.wait_ready(How::Block)? else {
            unreachable!("a blocking wait ends with a lane or an error")
        };
        let (l, layout) = (self.lanes[i], self.layout);
        let at = l.tail & (layout.cap as u64 - 1);
        let offset = l.lane.data + at as usize;
        let h = self.region.word_at(offset).load(Ordering::Acquire);
        match layout.parse(h, l.tail) {
            Some((len, KIND_BYTES)) => {
                let r = if at + record_len(len) <= layout.cap as u64 {
                    // SAFETY: a published record (its header read with Acquire) that the
                    // sender leaves alone until our position passes it, which happens
                    // below, after `f`; no other process writes it (the caller's contract).
                    f(unsafe { self.region.payload(offset, len) })
                } else {
                    // Wrapping around the end of the ring: from a copy.
                    let mut buf = Vec::with_capacity(len);
                    layout.get(&self.region, &l.lane, l.tail.wrapping_add(8), len, &mut buf);
                    f(&buf)
                };
                // Taken only now: if `f` panicked, the message stays.
                let tail = l.tail.wrapping_add(record_len(len));
                self.lanes[i].tail = tail;
                self.publish_if_due(i, tail);
                Ok(r)
            }
            Some((len, KIND_POOL)) => {
                let (slot, len, held) = self.take_pooled(i, len)?;
                // SAFETY: the slot is held by this receiver (its state names it) until it
                // is given back below, after `f`; no other process writes it (the caller's
                // contract).
                let r = f(unsafe { self.region.bytes(self.layout.pool.data(slot), len) });
                self.give_back(slot, held)?;
                Ok(r)
            }
            Some((len, _)) => {
                // A sealed hand-off: opened, given to `f`, and only then taken (as
                // read_record does, published at once: the sender keeps the memfd open
                // until our published position passes it).
                let mut rec = Vec::with_capacity(len);
                layout.get(&self.region, &l.lane, l.tail.wrapping_add(8), len, &mut rec);
                let r = sealed::open(&self.region, i, self.lanes[i].lane.owner, &rec, None).map(|m| f(&m));
                self.lanes[i].tail = l.tail.wrapping_add(record_len(len));
                self.publish(i);
                r
            }
            None => {
                // Garbage: read_record reports it.
                let mut buf = Vec::new();
                Ok(match self.read_record(i, &mut buf, None)? {
                    Got::Bytes => f(&buf),
                    Got::Sealed(m) => f(&m),
                })
            }
        }
    }

    /// The fast path of a receive from lane `i`: take the record at its position if it is
    /// a byte message lying whole before the end of the ring, in an endpoint this process
    /// owns. False takes nothing: the general path then does the same checks and reports
    /// what failed (garbage included).
    #[inline(always)]
    fn take_now(&mut self, i: usize, buf: &mut Vec<u8>) -> bool {
        let l = self.lanes[i];
        let layout = self.layout;
        let cap = layout.cap as u64;
        let at = l.tail & (cap - 1);
        let h = self
            .region
            .word_at(l.lane.data + at as usize)
            .load(Ordering::Acquire);
        let Some((len, KIND_BYTES)) = layout.parse(h, l.tail) else {
            return false;
        };
        let rec = record_len(len);
        if at + rec > cap || !self.me.is_current() {
            return false;
        }
        buf.clear();
        self.region
            .copy_out_append(l.lane.data + at as usize + 8, len, buf);
        let tail = l.tail.wrapping_add(rec);
        self.lanes[i].tail = tail;
        self.publish_if_due(i, tail);
        true
    }

    /// Publish lane `i`'s position `tail` lazily while more messages follow (every quarter
    /// ring), at once when the lane is empty: then a sender waiting for the ring to drain
    /// (`flush`) learns it has.
    #[inline(always)]
    fn publish_if_due(&mut self, i: usize, tail: u64) {
        let (l, layout) = (&self.lanes[i], self.layout);
        if tail.wrapping_sub(l.published) >= (layout.cap / 4) as u64
            || self
                .region
                .word(layout.header_at(&l.lane, tail))
                .load(Ordering::Relaxed)
                == 0
        {
            self.publish(i);
        }
    }

    fn take(&mut self, buf: &mut Vec<u8>, how: How) -> Result<bool> {
        self.me.check("recv")?;
        let Some(i) = self.wait_ready(how)? else {
            return Ok(false);
        };
        if self.take_now(i, buf) {
            return Ok(true);
        }
        if let Got::Sealed(m) = self.read_record(i, buf, Some(self.max_sealed))? {
            buf.clear();
            buf.extend_from_slice(&m);
        }
        Ok(true)
    }

    /// A lane with a message at its position, in round-robin order.
    #[inline]
    fn ready_lane(&mut self) -> Result<Option<usize>> {
        let n = self.lanes.len();
        for k in 0..n {
            let i = if n == 1 { 0 } else { (self.next + k) % n };
            let l = &self.lanes[i];
            if self
                .region
                .word(self.layout.header_at(&l.lane, l.tail))
                .load(Ordering::Relaxed)
                != 0
            {
                self.next = i + 1;
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Wait as `how` says until some lane holds a message; which one.
    #[inline]
    fn wait_ready(&mut self, how: How) -> Result<Option<usize>> {
        match self.ready_lane()? {
            Some(i) => Ok(Some(i)),
            None => self.wait_ready_slow(how),
        }
    }

    #[cold]
    fn wait_ready_slow(&mut self, how: How) -> Result<Option<usize>> {
        // Nothing to take: let the senders have the room we freed.
        self.publish_all();
        if let How::Try = how {
            // Tell "later" from "never" (all senders gone) cheaply, looking at the
            // processes behind the owner words at most every 50 ms.
            let look = self.last_look.elapsed() >= wait::SLICE;
            if look {
                self.last_look = Instant::now();
            }
            return match senders_present(&self.region, self.layout, look) {
                Ok(()) => Ok(None),
                Err(e) => self.last_look_at_lanes(e),
            };
        }
        for (w, l) in self.watch.iter_mut().zip(&self.lanes) {
            *w = self.layout.header_at(&l.lane, l.tail);
        }
        let mut waiting = self.waiting;
        loop {
            let (region, layout, headers) = (&self.region, self.layout, &self.watch);
            let plan = waiting.plan(region.word(RX_EVENT));
            if waiting.how == self.waiting.how {
                self.fast_spin = !plan.spin.is_zero();
            }
            waiting = waiting.retry();
            let waited = match wait::wait_planned(
                region.word(RX_EVENT),
                plan,
                how.deadline(),
                || {
                    headers
                        .iter()
                        .any(|&h| region.word(h).load(Ordering::Relaxed) != 0)
                },
                |look| senders_present(region, layout, look),
            ) {
                Ok(w) => w,
                Err(e) => return self.last_look_at_lanes(e),
            };
            match waited {
                Waited::Ready => {
                    if let Some(i) = self.ready_lane()? {
                        return Ok(Some(i));
                    }
                    // A word a peer set and cleared again: keep waiting.
                }
                Waited::TimedOut => return Ok(None),
            }
        }
    }

    /// The senders were found gone (`e`) after the lanes were found empty: a sender that
    /// sent and left in between left its message, so look at the lanes once more (a
    /// sender publishes its last header before it releases its owner word).
    #[cold]
    fn last_look_at_lanes(&mut self, e: Error) -> Result<Option<usize>> {
        if e.kind() == ErrorKind::Disconnected {
            std::sync::atomic::fence(Ordering::SeqCst);
            if let Some(i) = self.ready_lane()? {
                return Ok(Some(i));
            }
        }
        Err(e)
    }

    /// Wait for the next message: a pool slot taken (index, length, state held), or `None`
    /// with a message of the ring copied into `buf`.
    pub(super) fn take_slot(&mut self, buf: &mut Vec<u8>) -> Result<Option<(usize, usize, u64)>> {
        self.me.check("recv")?;
        let Some(i) = self.wait_ready(How::Block)? else {
            unreachable!("a blocking wait ends with a lane or an error")
        };
        let l = self.lanes[i];
        let h = self
            .region
            .word(self.layout.header_at(&l.lane, l.tail))
            .load(Ordering::Acquire);
        if let Some((len, KIND_POOL)) = self.layout.parse(h, l.tail) {
            return self.take_pooled(i, len).map(Some);
        }
        if let Got::Sealed(m) = self.read_record(i, buf, Some(self.max_sealed))? {
            buf.clear();
            buf.extend_from_slice(&m);
        }
        Ok(None)
    }

    /// Take the slot the pool record (of `len` bytes) at lane `i`'s position names, move
    /// past the record and publish our position at once (the slot is ours, not the ring's).
    fn take_pooled(&mut self, i: usize, len: usize) -> Result<(usize, usize, u64)> {
        let l = self.lanes[i];
        let mut rec = Vec::with_capacity(16);
        self.layout
            .get(&self.region, &l.lane, l.tail.wrapping_add(8), len, &mut rec);
        let taken = self.layout.pool.take(&self.region, i, &rec, self.tag)?;
        self.lanes[i].tail = l.tail.wrapping_add(record_len(len));
        self.publish(i);
        Ok(taken)
    }

    /// Give back a slot taken by `take_pooled`.
    fn give_back(&self, slot: usize, held: u64) -> Result<()> {
        if self.layout.pool.give_back(&self.region, slot, held) {
            return Ok(());
        }
        Err(corrupted(
            "recv",
            format!("pool slot {slot} was taken from the receiver while it held it"),
        ))
    }

    /// Read the record at lane `i`'s position into `buf` and move past it; a sealed
    /// hand-off larger than `max_sealed` (when given) is refused, and moved past all the same.
    #[inline]
    fn read_record(&mut self, i: usize, buf: &mut Vec<u8>, max_sealed: Option<usize>) -> Result<Got> {
        let l = self.lanes[i];
        let layout = self.layout;
        let h = self
            .region
            .word(layout.header_at(&l.lane, l.tail))
            .load(Ordering::Acquire);
        let Some((len, kind)) = layout.parse(h, l.tail) else {
            return Err(corrupted(
                "recv",
                format!(
                    "lane {i}: the word {h:#x} at position {} is not a record header",
                    l.tail
                ),
            ));
        };
        if kind == KIND_POOL {
            let (slot, n, held) = self.take_pooled(i, len)?;
            buf.clear();
            self.region.copy_out_append(self.layout.pool.data(slot), n, buf);
            self.give_back(slot, held)?;
            return Ok(Got::Bytes);
        }
        buf.clear();
        layout.get(&self.region, &l.lane, l.tail.wrapping_add(8), len, buf);
        let tail = l.tail.wrapping_add(record_len(len));
        self.lanes[i].tail = tail;
        if kind == KIND_SEALED {
            // The sender keeps the memfd open until our published position passes the
            // record: publish once it is open here (or failed for good).
            let got =
                sealed::open(&self.region, i, self.lanes[i].lane.owner, buf, max_sealed).map(Got::Sealed);
            self.publish(i);
            return got;
        }
        self.publish_if_due(i, tail);
        Ok(Got::Bytes)
    }

    /// Publish lane `i`'s position and wake its sender if it waits for room.
    #[inline]
    fn publish(&mut self, i: usize) {
        let l = &mut self.lanes[i];
        if l.tail != l.published {
            self.region.word(l.lane.tail).store(l.tail, Ordering::Release);
            l.published = l.tail;
            wait::notify(self.region.word(l.lane.event));
        }
    }

    fn publish_all(&mut self) {
        for i in 0..self.lanes.len() {
            self.publish(i);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.me.check("drop").is_ok() {
            self.publish_all();
            self._slot.release(&self.region);
            // Senders waiting for room learn at once that nobody will free it.
            for l in &self.lanes {
                wake_all(self.region.word(l.lane.event));
            }
        }
    }
}
