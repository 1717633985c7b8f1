//! Byte rings with one receiver: [`Sender`] and [`Receiver`] of a [`Channel`](super::Channel).
//!
//! A channel region holds one *lane* per sender: a ring of `capacity` bytes with a `head`
//! (written only by the lane's sender) and a `tail` (written only by the receiver), each on
//! its own cache-line pair. SPSC is one lane; MPSC gives each sender its own lane, so
//! senders never contend with each other and a sender that dies mid-message leaves nothing
//! half-visible: a message becomes visible only when `head` moves past it, after it is
//! complete.
//!
//! A record is an 8-byte header word (length in the low 32 bits, the record's kind in the
//! next 8) followed by the payload, padded to 8 bytes. Positions grow without wrapping (64
//! bits) and are reduced modulo the capacity, a power of two, so a payload may wrap around
//! the end of the ring (it is copied in two parts) but a header never does.
//!
//! Everything read from the region is validated before use: a `head` more than a ring
//! ahead of `tail`, a length beyond the record or the message limit, an unknown kind: the
//! operation fails with [`ErrorKind::Corrupted`] and touches nothing outside the lane.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::region::{Region, LINE};
use super::wait::{self, Me, Waited};
use crate::error::{Error, ErrorKind, Result};

// Word indices of the lane layout (see the module docs of `channel`).
pub(super) const RX_OWNER: usize = LINE;
pub(super) const EVER_SENDER: usize = LINE + 1;
pub(super) const EVER_RECEIVER: usize = LINE + 2;
pub(super) const RX_EVENT: usize = 2 * LINE;

/// The largest number of senders (lanes) a channel may have.
pub const MAX_SENDERS: usize = 64;

const KIND_BYTES: u64 = 0;
const KIND_SEALED: u64 = 1;
/// The payload of a sealed record: pid | fd << 32, dev, ino, len.
const SEALED_LEN: usize = 32;

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
}

impl Layout {
    fn header_bytes(&self) -> usize {
        ((3 + 3 * self.lanes) * LINE * 8).next_multiple_of(4096)
    }

    pub fn len(&self) -> usize {
        self.header_bytes() + self.lanes * self.cap
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

    /// The largest message: the ring less one header, and at most `u32::MAX`.
    pub fn max_message(&self) -> usize {
        (self.cap - 8).min(u32::MAX as usize)
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
        };
        if (layout.cap as u128) * (layout.lanes as u128) > isize::MAX as u128 / 2 {
            return Err(format!("{lanes} lanes of {cap} bytes do not fit in memory"));
        }
        Ok(layout)
    }

    /// Every owner word: the receiver's, then each lane's sender.
    pub fn owner_words(&self) -> Vec<usize> {
        std::iter::once(RX_OWNER)
            .chain((0..self.lanes).map(|i| self.lane(i).owner))
            .collect()
    }
}

/// The bytes a record of a `len`-byte payload takes.
#[inline(always)]
fn record_len(len: usize) -> u64 {
    8 + (len as u64).next_multiple_of(8)
}

fn corrupted(op: &'static str, what: String) -> Error {
    Error::new(ErrorKind::Corrupted, op, what)
        .with_hint("another process wrote over the channel's shared memory; the channel cannot be trusted")
}

fn disconnected(op: &'static str, who: &str) -> Error {
    Error::new(
        ErrorKind::Disconnected,
        op,
        format!("the {who} is gone (closed, or its process died)"),
    )
}

/// The sending end of one lane. Made by [`Channel::sender`](super::Channel::sender).
///
/// Owned by the process that attached it: used from a child created by `fork`, every
/// operation fails (attach a new sender in the child). Dropping it detaches the lane, and
/// the receiver gets [`ErrorKind::Disconnected`] once it has drained the messages sent.
pub struct Sender {
    region: Arc<super::Guarded>,
    layout: Layout,
    lane: Lane,
    me: Me,
    /// Our position: where the next record goes. Published to `lane.head` by `publish`.
    head: u64,
    /// The last published head.
    published: u64,
    /// The receiver's position as last read.
    tail: u64,
    spin: Duration,
    /// Sealed memfds handed over and not yet taken: (the position after the record, fd).
    inflight: VecDeque<(u64, crate::shm::Memfd)>,
    /// Which lane.
    index: usize,
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

/// How long an operation may wait.
#[derive(Clone, Copy)]
enum How {
    Try,
    Block,
    Until(Instant),
}

impl How {
    fn deadline(self) -> Option<Instant> {
        match self {
            How::Until(d) => Some(d),
            _ => None,
        }
    }
}

fn until(timeout: Duration) -> How {
    Instant::now().checked_add(timeout).map_or(How::Block, How::Until)
}

impl Sender {
    pub(super) fn attach(region: Arc<super::Guarded>, layout: Layout, spin: Duration) -> Result<Sender> {
        let me = Me::now();
        let taken = (0..layout.lanes).find(|&i| wait::claim(region.word(layout.lane(i).owner), me.word));
        let Some(i) = taken else {
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
        let head = region.word(lane.head).load(Ordering::Acquire);
        let tail = region.word(lane.tail).load(Ordering::Acquire);
        let mut s = Sender {
            region,
            layout,
            lane,
            me,
            head,
            published: head,
            tail,
            spin,
            inflight: VecDeque::new(),
            index: i,
        };
        if head.wrapping_sub(tail) > layout.cap as u64 {
            let e = corrupted(
                "attach sender",
                format!("lane {i} has head {head} more than a ring ahead of tail {tail}"),
            );
            wait::release(s.region.word(lane.owner), me.word);
            s.me.word = 0;
            return Err(e);
        }
        s.region.word(EVER_SENDER).store(1, Ordering::Release);
        Ok(s)
    }

    /// The largest message this channel carries.
    pub fn max_message(&self) -> usize {
        self.layout.max_message()
    }

    /// Send `msg`, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] once the receiver is gone (closed, or its process died:
    /// noticed within 100 ms while waiting); [`ErrorKind::InvalidInput`] for a message
    /// larger than [`max_message`](Self::max_message); [`ErrorKind::Corrupted`] if the
    /// shared state is garbage.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_how(msg, How::Block).map(|_| ())
    }

    /// Send `msg` if there is room now. Returns whether it was sent.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn try_send(&mut self, msg: &[u8]) -> Result<bool> {
        self.send_how(msg, How::Try)
    }

    /// Send `msg`, waiting at most `timeout` for room. Returns whether it was sent.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<bool> {
        self.send_how(msg, until(timeout))
    }

    /// Send a plain value by copy (`bytemuck`): the receiver gets it with
    /// [`Receiver::recv_value`].
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_value<T: bytemuck::NoUninit>(&mut self, value: &T) -> Result<()> {
        self.send(bytemuck::bytes_of(value))
    }

    /// Send every message of `msgs`, waiting for room as needed, and wake the receiver once
    /// per batch instead of once per message: the way to move many small messages fast.
    /// Returns how many were sent (all, unless an error ends the batch: the messages before
    /// it were sent).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_batch<I>(&mut self, msgs: I) -> Result<usize>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.me.check("send")?;
        let mut n = 0;
        let mut result = Ok(());
        for msg in msgs {
            let msg = msg.as_ref();
            match self.put(msg, KIND_BYTES, How::Block) {
                Ok(_) => n += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.publish();
        result.map(|_| n)
    }

    fn send_how(&mut self, msg: &[u8], how: How) -> Result<bool> {
        self.me.check("send")?;
        let sent = self.put(msg, KIND_BYTES, how)?;
        if sent {
            self.publish();
        }
        Ok(sent)
    }

    /// Write one record at `head` (not yet published), waiting for room as `how` says.
    #[inline]
    fn put(&mut self, msg: &[u8], kind: u64, how: How) -> Result<bool> {
        if msg.len() > self.layout.max_message() {
            return Err(self.too_large(msg.len()));
        }
        if self.region.word(RX_OWNER).load(Ordering::Relaxed) == 0
            && self.region.word(EVER_RECEIVER).load(Ordering::Relaxed) != 0
        {
            return Err(disconnected("send", "receiver"));
        }
        let need = record_len(msg.len());
        if self.head - self.tail + need > self.layout.cap as u64 && !self.make_room(need, how)? {
            return Ok(false);
        }
        let cap = self.layout.cap;
        let mask = cap as u64 - 1;
        let at = (self.head & mask) as usize;
        self.region
            .word((self.lane.data + at) / 8)
            .store(msg.len() as u64 | kind << 32, Ordering::Relaxed);
        let p = (at + 8) & (cap - 1);
        let first = msg.len().min(cap - p);
        self.region.copy_in(self.lane.data + p, &msg[..first]);
        if first < msg.len() {
            self.region.copy_in(self.lane.data, &msg[first..]);
        }
        self.head += need;
        Ok(true)
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

    /// Make the records written so far visible, and wake the receiver if it sleeps.
    #[inline]
    fn publish(&mut self) {
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
        // The tail only moves forward, and never past what we published.
        if t.wrapping_sub(self.tail) > self.published.wrapping_sub(self.tail) {
            return Err(corrupted(
                "send",
                format!(
                    "the receiver's position {t} is outside {}..={}",
                    self.tail, self.published
                ),
            ));
        }
        self.tail = t;
        while self.inflight.front().is_some_and(|(end, _)| *end <= t) {
            self.inflight.pop_front();
        }
        Ok(self.head - self.tail + need <= self.layout.cap as u64)
    }

    #[cold]
    fn make_room(&mut self, need: u64, how: How) -> Result<bool> {
        if self.refresh(need)? {
            return Ok(true);
        }
        if let How::Try = how {
            return Ok(false);
        }
        // What is written must be visible, or the receiver can never free room.
        self.publish();
        let region = Arc::clone(&self.region);
        let lane = self.lane;
        let (cap, published, tail0) = (self.layout.cap as u64, self.published, self.tail);
        let head = self.head;
        let waited = wait::wait_for(
            region.word(lane.event),
            self.spin,
            how.deadline(),
            || {
                let t = region.word(lane.tail).load(Ordering::Acquire);
                t.wrapping_sub(tail0) > published.wrapping_sub(tail0) || head - t + need <= cap
            },
            |look| receiver_present(&region, "send", look),
        )?;
        match waited {
            Waited::Ready => self.refresh(need),
            Waited::TimedOut => Ok(false),
        }
    }

    /// Hand `memfd` to the receiver without copying its contents: it is sealed against
    /// writing, shrinking, growing and further seals (so nobody can change it again), kept
    /// open here until the receiver has taken it, and received as a
    /// [`Message::Sealed`](super::Message::Sealed), a read-only view whose bytes cannot
    /// change while it lives. The cost does not depend on the size.
    ///
    /// The receiver opens the descriptor through `/proc/PID/fd`, which the kernel allows
    /// to processes of the same user (more exactly: those allowed to inspect this one).
    ///
    /// # Errors
    /// As [`send`](Self::send); sealing fails while a writable shared mapping of the memfd
    /// exists (drop it first).
    pub fn send_sealed(&mut self, memfd: crate::shm::Memfd) -> Result<()> {
        use crate::shm::Seals;
        use std::os::fd::AsRawFd;
        self.me.check("send")?;
        let have = memfd.seals()?;
        let want = Seals::WRITE | Seals::SHRINK | Seals::GROW | Seals::SEAL;
        if !have.contains(want) {
            memfd.add_seals(want)?;
        }
        let info =
            crate::sys::file_info(std::os::fd::AsFd::as_fd(&memfd)).map_err(|e| Error::os("fstat", e))?;
        let pid = crate::sys::shm::pid() as u64;
        let fd = std::os::fd::AsFd::as_fd(&memfd).as_raw_fd() as u64;
        let mut rec = [0u8; SEALED_LEN];
        for (i, w) in [pid | fd << 32, info.dev, info.ino, info.size].iter().enumerate() {
            rec[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.put(&rec, KIND_SEALED, How::Block)?;
        self.inflight.push_back((self.head, memfd));
        self.publish();
        Ok(())
    }

    /// Wait until the receiver has taken every message sent so far (or is gone).
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] if the receiver goes away first.
    pub fn flush(&mut self) -> Result<()> {
        self.me.check("flush")?;
        self.publish();
        let full = self.layout.cap as u64;
        // Room for a whole ring means the ring is empty.
        while !self.refresh(full)? {
            let region = Arc::clone(&self.region);
            let lane = self.lane;
            let head = self.head;
            wait::wait_for(
                region.word(lane.event),
                self.spin,
                None,
                || region.word(lane.tail).load(Ordering::Acquire) == head,
                |look| receiver_present(&region, "flush", look),
            )?;
        }
        Ok(())
    }
}

/// Whether the receiver is there to take messages: an error once it attached and left, or
/// its process died.
fn receiver_present(region: &Region, op: &'static str, look: bool) -> Result<()> {
    if region.is_truncated() {
        return Err(region.truncated_error(op));
    }
    let owner = region.word(RX_OWNER).load(Ordering::Acquire);
    let ever = region.word(EVER_RECEIVER).load(Ordering::Relaxed) != 0;
    if (owner == 0 && ever) || (look && owner != 0 && !wait::alive(owner)) {
        return Err(disconnected(op, "receiver"));
    }
    Ok(())
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.me.check("drop").is_ok() && self.me.word != 0 {
            self.publish();
            // Sealed memfds not taken yet must stay open until the receiver has them: wait
            // a little for it (it may be gone), then give up on them.
            if !self.inflight.is_empty() {
                let _ = self.flush_for(Duration::from_millis(200));
            }
            wait::release(self.region.word(self.lane.owner), self.me.word);
            wait::notify(self.region.word(RX_EVENT));
        }
    }
}

impl Sender {
    fn flush_for(&mut self, d: Duration) -> Result<()> {
        let deadline = Instant::now() + d;
        let full = self.layout.cap as u64;
        while !self.refresh(full)? {
            let region = Arc::clone(&self.region);
            let lane = self.lane;
            let head = self.head;
            if let Waited::TimedOut = wait::wait_for(
                region.word(lane.event),
                Duration::ZERO,
                Some(deadline),
                || region.word(lane.tail).load(Ordering::Acquire) == head,
                |look| receiver_present(&region, "drop", look),
            )? {
                break;
            }
        }
        Ok(())
    }
}

/// A message taken from a channel.
#[derive(Debug)]
pub enum Message {
    /// Bytes copied out of the ring (this process's own memory).
    Bytes(Vec<u8>),
    /// A memfd handed over by [`Sender::send_sealed`], mapped read-only; its seals make it
    /// immutable for everyone, so it derefs to `[u8]`.
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

/// The receiver's view of one lane.
#[derive(Clone, Copy, Debug)]
struct RxLane {
    lane: Lane,
    /// The sender's position as last read.
    head: u64,
    /// Our position: the next record to take.
    tail: u64,
}

/// The receiving end of a channel: one per channel. Made by
/// [`Channel::receiver`](super::Channel::receiver).
///
/// With several senders, each sender's messages arrive in the order sent; the lanes are
/// served in turn, so no sender can starve another.
pub struct Receiver {
    region: Arc<super::Guarded>,
    layout: Layout,
    me: Me,
    lanes: Vec<RxLane>,
    /// The lane to look at first (round robin).
    next: usize,
    spin: Duration,
    last_check: Instant,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl Receiver {
    pub(super) fn attach(region: Arc<super::Guarded>, layout: Layout, spin: Duration) -> Result<Receiver> {
        let me = Me::now();
        if !wait::claim(region.word(RX_OWNER), me.word) {
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
        }
        let mut lanes = Vec::with_capacity(layout.lanes);
        for i in 0..layout.lanes {
            let lane = layout.lane(i);
            let tail = region.word(lane.tail).load(Ordering::Acquire);
            let head = region.word(lane.head).load(Ordering::Acquire);
            if head.wrapping_sub(tail) > layout.cap as u64 {
                wait::release(region.word(RX_OWNER), me.word);
                return Err(corrupted(
                    "attach receiver",
                    format!("lane {i} has head {head} more than a ring ahead of tail {tail}"),
                ));
            }
            lanes.push(RxLane {
                lane,
                head: tail,
                tail,
            });
        }
        region.word(EVER_RECEIVER).store(1, Ordering::Release);
        Ok(Receiver {
            region,
            layout,
            me,
            lanes,
            next: 0,
            spin,
            last_check: Instant::now(),
        })
    }

    /// Take the next message, waiting as long as it takes. A sealed hand-off is copied
    /// out (use [`recv_message`](Self::recv_message) to keep it zero-copy).
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] once every sender is gone and every message sent has
    /// been taken (a sender's death is noticed within 100 ms); [`ErrorKind::Corrupted`] if
    /// the shared state is garbage.
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

    /// Take a plain value sent with [`Sender::send_value`].
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`ErrorKind::InvalidInput`] when the message is not
    /// `size_of::<T>()` bytes (it is consumed all the same).
    pub fn recv_value<T: bytemuck::AnyBitPattern>(&mut self) -> Result<T> {
        let v = self.recv()?;
        bytemuck::try_pod_read_unaligned(&v).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                "recv",
                format!(
                    "a message of {} bytes is not a {}-byte value",
                    v.len(),
                    std::mem::size_of::<T>()
                ),
            )
        })
    }

    /// Take the next message as it came: bytes, or a sealed memory view (zero-copy).
    ///
    /// # Errors
    /// As [`recv`](Self::recv); a sealed hand-off whose sender died before it was taken is
    /// [`ErrorKind::Disconnected`] (the message is dropped, the next one follows).
    pub fn recv_message(&mut self) -> Result<Message> {
        self.me.check("recv")?;
        let mut buf = Vec::new();
        self.wait_ready(How::Block)?;
        Ok(match self.take_ready(&mut buf)? {
            Got::Bytes => Message::Bytes(buf),
            Got::Sealed(m) => Message::Sealed(m),
        })
    }

    /// Take every message there now (at least one, waiting for it), at most `max`,
    /// calling `f` with each (a copy in this process's memory); the senders are woken
    /// once per batch. Returns how many were taken.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); messages taken before an error were given to `f`.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        self.me.check("recv")?;
        let mut buf = Vec::new();
        if max == 0 {
            return Ok(0);
        }
        self.wait_ready(How::Block)?;
        let mut n = 0;
        while n < max {
            match self.ready_lane()? {
                Some(i) => {
                    let got = self.read_record(i, &mut buf);
                    match got {
                        Ok(Got::Bytes) => f(&buf),
                        Ok(Got::Sealed(m)) => f(&m),
                        Err(e) => {
                            self.advance_all();
                            return Err(e);
                        }
                    }
                    n += 1;
                }
                None => break,
            }
        }
        self.advance_all();
        Ok(n)
    }

    fn take(&mut self, buf: &mut Vec<u8>, how: How) -> Result<bool> {
        self.me.check("recv")?;
        if !self.wait_ready(how)? {
            return Ok(false);
        }
        if let Got::Sealed(m) = self.take_ready(buf)? {
            buf.clear();
            buf.extend_from_slice(&m);
        }
        Ok(true)
    }

    /// Take the record of the ready lane and publish our new position.
    fn take_ready(&mut self, buf: &mut Vec<u8>) -> Result<Got> {
        let Some(i) = self.ready_lane()? else {
            return Err(corrupted(
                "recv",
                "a lane that held a message holds none now".into(),
            ));
        };
        // Published even when the record fails after it was consumed (a sealed hand-off
        // whose sender is gone): the next message follows.
        let got = self.read_record(i, buf);
        self.advance_all();
        got
    }

    /// Publish our positions and wake senders waiting for room.
    fn advance_all(&mut self) {
        for l in &self.lanes {
            let w = self.region.word(l.lane.tail);
            if w.load(Ordering::Relaxed) != l.tail {
                w.store(l.tail, Ordering::Release);
                wait::notify(self.region.word(l.lane.event));
            }
        }
    }

    /// A lane with a message, in round-robin order.
    #[inline]
    fn ready_lane(&mut self) -> Result<Option<usize>> {
        let n = self.lanes.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let l = &mut self.lanes[i];
            if l.head == l.tail {
                let h = self.region.word(l.lane.head).load(Ordering::Acquire);
                if h.wrapping_sub(l.tail) > self.layout.cap as u64 {
                    return Err(corrupted(
                        "recv",
                        format!(
                            "lane {i}: the sender's position {h} is more than a ring ahead of {}",
                            l.tail
                        ),
                    ));
                }
                l.head = h;
                if h == l.tail {
                    continue;
                }
            }
            self.next = (i + 1) % n;
            return Ok(Some(i));
        }
        Ok(None)
    }

    /// Wait as `how` says until some lane holds a message. Ok(false) when none came.
    fn wait_ready(&mut self, how: How) -> Result<bool> {
        if self.ready_lane()?.is_some() {
            // ready_lane moved `next` past the lane; step back so the take finds it first.
            self.next = (self.next + self.lanes.len() - 1) % self.lanes.len();
            return Ok(true);
        }
        self.wait_ready_slow(how)
    }

    #[cold]
    fn wait_ready_slow(&mut self, how: How) -> Result<bool> {
        if let How::Try = how {
            // Nothing there: tell "later" from "never" (all senders gone) cheaply, looking at
            // the processes behind the owner words at most every 50 ms.
            let look = self.last_check.elapsed() >= wait::SLICE;
            if look {
                self.last_check = Instant::now();
            }
            self.senders_present(look)?;
            return Ok(false);
        }
        let region = Arc::clone(&self.region);
        let layout = self.layout;
        let tails: Vec<u64> = self.lanes.iter().map(|l| l.tail).collect();
        let waited = wait::wait_for(
            region.word(RX_EVENT),
            self.spin,
            how.deadline(),
            || {
                (0..layout.lanes)
                    .any(|i| region.word(layout.lane(i).head).load(Ordering::Acquire) != tails[i])
            },
            |look| senders_present(&region, layout, look),
        )?;
        match waited {
            Waited::Ready => {
                if self.ready_lane()?.is_none() {
                    // A garbage head that equals our tail again; nothing to take.
                    return Ok(false);
                }
                self.next = (self.next + self.lanes.len() - 1) % self.lanes.len();
                Ok(true)
            }
            Waited::TimedOut => Ok(false),
        }
    }

    fn senders_present(&self, look: bool) -> Result<()> {
        senders_present(&self.region, self.layout, look)
    }

    /// Read the record at lane `i`'s tail into `buf` and advance our tail (not yet
    /// published).
    fn read_record(&mut self, i: usize, buf: &mut Vec<u8>) -> Result<Got> {
        let cap = self.layout.cap;
        let l = self.lanes[i];
        let at = (l.tail & (cap as u64 - 1)) as usize;
        let hdr = self.region.word((l.lane.data + at) / 8).load(Ordering::Relaxed);
        let len = hdr as u32 as usize;
        let kind = hdr >> 32;
        let avail = l.head - l.tail;
        if len > self.layout.max_message() || record_len(len) > avail || kind > KIND_SEALED {
            return Err(corrupted(
                "recv",
                format!(
                    "lane {i}: a record header {hdr:#x} at position {} does not fit the {avail} bytes published",
                    l.tail
                ),
            ));
        }
        buf.clear();
        buf.resize(len, 0);
        let p = (at + 8) & (cap - 1);
        let first = len.min(cap - p);
        self.region.copy_out(l.lane.data + p, &mut buf[..first]);
        if first < len {
            self.region.copy_out(l.lane.data, &mut buf[first..]);
        }
        self.lanes[i].tail += record_len(len);
        if kind == KIND_SEALED {
            return self.open_sealed(i, buf).map(Got::Sealed);
        }
        Ok(Got::Bytes)
    }

    fn open_sealed(&self, i: usize, rec: &[u8]) -> Result<crate::shm::SealedMap> {
        use crate::shm::{Memfd, Seals};
        let bad = || {
            corrupted(
                "recv",
                format!("lane {i}: a sealed hand-off record of {} bytes", rec.len()),
            )
        };
        if rec.len() != SEALED_LEN {
            return Err(bad());
        }
        let w = |k: usize| u64::from_le_bytes(rec[k * 8..k * 8 + 8].try_into().unwrap());
        let (pid, fd, dev, ino, len) = (w(0) as u32, (w(0) >> 32) as u32, w(1), w(2), w(3));
        // The sender must be the lane's owner: a record cannot make us open another
        // process's files.
        let owner = self.region.word(self.lanes[i].lane.owner).load(Ordering::Acquire);
        if owner == 0 || wait::pid_of(owner) != pid {
            return Err(disconnected("recv", "sender of a sealed hand-off")
                .with_hint("the sender left before the receiver took its memfd; the message is lost"));
        }
        let file = crate::sys::shm::open_peer_fd(pid, fd).map_err(|e| {
            let kind = e.kind();
            let err =
                Error::os("open /proc/PID/fd", e).with_path(Some(format!("/proc/{pid}/fd/{fd}").as_ref()));
            if kind == std::io::ErrorKind::NotFound {
                err.with_kind(ErrorKind::Disconnected)
                    .with_hint("the sender closed the memfd or died before it was taken")
            } else {
                err.with_hint("the receiver must be allowed to inspect the sender's process (the same user)")
            }
        })?;
        let info =
            crate::sys::file_info(std::os::fd::AsFd::as_fd(&file)).map_err(|e| Error::os("fstat", e))?;
        if info.dev != dev || info.ino != ino || info.size != len {
            return Err(corrupted(
                "recv",
                format!("/proc/{pid}/fd/{fd} is not the memfd the record describes"),
            ));
        }
        let memfd = Memfd::from_fd(file)?;
        memfd.require_seals(Seals::WRITE | Seals::SHRINK)?;
        memfd.map_sealed()
    }
}

/// What `read_record` left: bytes in the buffer, or a sealed view.
enum Got {
    Bytes,
    Sealed(crate::shm::SealedMap),
}

/// Whether some sender is (or may yet be) there: an error once senders attached and all
/// left. With `look`, owners whose process died are released (their lanes drain first:
/// this is only asked when every lane is empty).
fn senders_present(region: &Region, layout: Layout, look: bool) -> Result<()> {
    if region.is_truncated() {
        return Err(region.truncated_error("recv"));
    }
    if region.word(EVER_SENDER).load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let mut any = false;
    for i in 0..layout.lanes {
        let w = region.word(layout.lane(i).owner);
        let owner = w.load(Ordering::Acquire);
        if owner == 0 {
            continue;
        }
        if look && !wait::alive(owner) {
            wait::release(w, owner);
            continue;
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(disconnected("recv", "last sender"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.me.check("drop").is_ok() {
            self.advance_all();
            wait::release(self.region.word(RX_OWNER), self.me.word);
            for l in &self.lanes {
                wait::notify(self.region.word(l.lane.event));
            }
        }
    }
}
