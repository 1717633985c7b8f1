//! One publisher, many subscribers: every subscriber sees every message published after it
//! joined, at its own pace.
//!
//! ```
//! use mman::channel::broadcast::Broadcast;
//! # fn main() -> mman::Result<()> {
//! let bus = Broadcast::anonymous(8, 64)?;    // 8 slots of up to 64 bytes
//! let mut publisher = bus.publisher()?;
//! let mut early = bus.subscriber()?;
//! publisher.publish(b"frame 0")?;
//! let mut late = bus.subscriber()?;           // joins now: sees what comes next
//! publisher.publish(b"frame 1")?;
//! assert_eq!(early.recv()?.data, b"frame 0");
//! assert_eq!(early.recv()?.data, b"frame 1");
//! assert_eq!(late.recv()?.data, b"frame 1");
//!
//! // A subscriber that falls behind by more than the slots is told what it missed.
//! for i in 0..20u8 {
//!     publisher.publish(&[i])?;
//! }
//! let next = late.recv()?;
//! assert_eq!(next.missed, 12);                // 20 published, the last 8 are still there
//! assert_eq!(next.data, [12]);
//! # Ok(()) }
//! ```
//!
//! The region holds `slots` fixed-size slots. Message `n` goes to slot `n % slots`,
//! guarded by a sequence word (a seqlock): `2n + 1` while it is written, `2n + 2` once
//! complete. A subscriber copies a slot out and keeps the copy only if the sequence word
//! did not change meanwhile; when it finds a later message in the slot it wanted, it was
//! overtaken, and the next message it gets says exactly how many it missed
//! ([`Delivery::missed`]). A subscriber joined with [`Broadcast::subscriber_waited_for`]
//! is never overtaken: the publisher waits for it (until it leaves or its process dies).
//!
//! Copies are made of 8-byte atomics, so a copy that races with the publisher is a
//! discarded copy, never undefined behaviour; every word a peer can write is validated.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::region::Slot;
use super::region::{Kind, Region, Shape, LINE};
use super::wait::{self, wake_all, Me, Waited};
use super::Guarded;
use crate::error::{Error, ErrorKind, Result};

const PUB_OWNER: usize = LINE;
const EVER_PUB: usize = LINE + 1;
const HEAD: usize = LINE + 2;
const PUB_EVENT: usize = 2 * LINE;
const SPACE_EVENT: usize = 3 * LINE;
/// Bumped by each waited-for subscriber that joins: the publisher re-reads the cursors.
const JOINS: usize = 3 * LINE + 1;
/// Subscriber `i`'s words: owner, cursor, flags, on line `4 + i`.
const SUBS: usize = 4 * LINE;
const WAIT_FOR_ME: u64 = 1;

/// The most subscribers a broadcast may have.
pub const MAX_SUBSCRIBERS: usize = 1024;

/// The validated geometry of a broadcast region.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    slots: u64,
    size: usize,
    subs: usize,
}

impl Geometry {
    fn stride(&self) -> usize {
        16 + self.size.next_multiple_of(8)
    }

    fn slots_at(&self) -> usize {
        ((4 + self.subs) * LINE * 8).next_multiple_of(4096)
    }

    fn len(&self) -> usize {
        self.slots_at() + self.slots as usize * self.stride()
    }

    /// Byte offset of slot `n % slots`.
    fn slot(&self, n: u64) -> usize {
        self.slots_at() + (n & (self.slots - 1)) as usize * self.stride()
    }

    fn sub(&self, i: usize) -> usize {
        SUBS + i * LINE
    }

    fn check(slots: u64, size: u64, subs: u64) -> std::result::Result<Geometry, String> {
        if !slots.is_power_of_two() || !(2..=1 << 24).contains(&slots) {
            return Err(format!("{slots} slots: a power of two from 2 to 2^24"));
        }
        if !(1..=1 << 30).contains(&size) {
            return Err(format!("a message size of {size} bytes: from 1 byte to 1 GiB"));
        }
        if !(1..=MAX_SUBSCRIBERS as u64).contains(&subs) {
            return Err(format!("{subs} subscribers: from 1 to {MAX_SUBSCRIBERS}"));
        }
        let g = Geometry {
            slots,
            size: size as usize,
            subs: subs as usize,
        };
        if (g.slots as u128) * (g.stride() as u128) > isize::MAX as u128 / 2 {
            return Err(format!("{slots} slots of {size} bytes do not fit in memory"));
        }
        Ok(g)
    }

    fn shape(&self) -> Shape {
        Shape {
            kind: Kind::Broadcast,
            params: [self.slots, self.size as u64, self.subs as u64],
            len: self.len(),
        }
    }
}

fn geometry(shape: Shape) -> Geometry {
    Geometry {
        slots: shape.params[0],
        size: shape.params[1] as usize,
        subs: shape.params[2] as usize,
    }
}

pub(super) fn check_shape(params: [u64; 3]) -> Result<Shape> {
    Geometry::check(params[0], params[1], params[2])
        .map(|g| g.shape())
        .map_err(|why| Error::new(ErrorKind::Corrupted, "open broadcast", why))
}

/// How to make a [`Broadcast`].
#[derive(Clone, Debug)]
pub struct Options {
    slots: u64,
    size: usize,
    subs: usize,
    spin: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// 64 slots of 4 KiB, up to 32 subscribers, the default spin.
    pub fn new() -> Self {
        Options {
            slots: 64,
            size: 4096,
            subs: 32,
            spin: wait::SPIN,
        }
    }

    /// How many messages the region keeps: a power of two from 2 to 2^24. A subscriber
    /// more than this many behind is overtaken.
    pub fn slots(&mut self, n: u64) -> &mut Self {
        self.slots = n;
        self
    }

    /// The largest message, in bytes (1 byte to 1 GiB); each slot is this large.
    pub fn message_size(&mut self, bytes: usize) -> &mut Self {
        self.size = bytes;
        self
    }

    /// How many subscribers may be attached at once (1 to [`MAX_SUBSCRIBERS`]).
    pub fn subscribers(&mut self, n: usize) -> &mut Self {
        self.subs = n;
        self
    }

    /// How long a waiting endpoint of this process spins before it sleeps.
    pub fn spin(&mut self, spin: Duration) -> &mut Self {
        self.spin = spin;
        self
    }

    fn geometry(&self) -> Result<Geometry> {
        Geometry::check(self.slots, self.size as u64, self.subs as u64)
            .map_err(|why| Error::new(ErrorKind::InvalidInput, "make broadcast", why))
    }

    /// A broadcast in anonymous shared memory, inherited by children created by `fork`.
    ///
    /// # Errors
    /// Invalid options; the memory cannot be mapped.
    pub fn anonymous(&self) -> Result<Broadcast> {
        let g = self.geometry()?;
        self.handle(Region::anonymous(g.shape())?)
    }

    /// A broadcast in a new named object `/mman.NAME` (mode 0600; fails if it exists).
    ///
    /// # Errors
    /// Invalid options or name; [`ErrorKind::AddressInUse`] when the name is taken.
    pub fn create(&self, name: &str) -> Result<Broadcast> {
        let g = self.geometry()?;
        self.handle(Region::create(name, g.shape())?)
    }

    /// Open the broadcast `/mman.NAME` another process created.
    ///
    /// # Errors
    /// As [`Channel::open`](super::Channel::open).
    pub fn open(&self, name: &str) -> Result<Broadcast> {
        self.handle(Region::open(name, Kind::Broadcast, check_shape)?)
    }

    fn handle(&self, region: Region) -> Result<Broadcast> {
        let shape = region.shape();
        Ok(Broadcast {
            region: Arc::new(Guarded::new(region)?),
            g: geometry(shape),
            spin: self.spin,
        })
    }
}

/// A broadcast region, from which the publisher and subscribers are attached. Cheap to
/// clone; keep it across `fork` and attach endpoints on each side.
#[derive(Clone)]
pub struct Broadcast {
    region: Arc<Guarded>,
    g: Geometry,
    spin: Duration,
}

impl std::fmt::Debug for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcast")
            .field("name", &self.region.name())
            .field("slots", &self.g.slots)
            .field("message_size", &self.g.size)
            .finish()
    }
}

impl Broadcast {
    /// A broadcast of `slots` messages of up to `message_size` bytes in anonymous shared
    /// memory (see [`Options::anonymous`]).
    ///
    /// # Errors
    /// As [`Options::anonymous`].
    pub fn anonymous(slots: u64, message_size: usize) -> Result<Broadcast> {
        Options::new().slots(slots).message_size(message_size).anonymous()
    }

    /// Open the broadcast `/mman.NAME` (see [`Options::open`]).
    ///
    /// # Errors
    /// As [`Options::open`].
    pub fn open(name: &str) -> Result<Broadcast> {
        Options::new().open(name)
    }

    /// Attach the publisher in this process (or take over from one that died, continuing
    /// its numbering).
    ///
    /// # Errors
    /// [`ErrorKind::AddressInUse`] while a live publisher is attached.
    pub fn publisher(&self) -> Result<Publisher> {
        let me = Me::now();
        let Some(slot) = self.region.claim(PUB_OWNER, me.word, "attach publisher")? else {
            let owner = self.region.word(PUB_OWNER).load(Ordering::Relaxed);
            return Err(Error::new(
                ErrorKind::AddressInUse,
                "attach publisher",
                format!("the publisher is process {} (alive)", wait::pid_of(owner)),
            ));
        };
        let head = self.region.word(HEAD).load(Ordering::Acquire);
        self.region.word(EVER_PUB).store(1, Ordering::Release);
        let mut p = Publisher {
            region: Arc::clone(&self.region),
            g: self.g,
            me,
            slot,
            head,
            floor: head,
            joins: self.region.word(JOINS).load(Ordering::Relaxed),
            spin: self.spin,
        };
        fence(Ordering::SeqCst);
        p.floor = p.floor_now(false);
        Ok(p)
    }

    /// Attach a subscriber that sees the messages published from now on; if it falls more
    /// than the slots behind, it is overtaken and told how many it missed.
    ///
    /// # Errors
    /// [`ErrorKind::ResourceLimit`] when every subscriber place is taken by a live process.
    pub fn subscriber(&self) -> Result<Subscriber> {
        self.subscribe(false)
    }

    /// Attach a subscriber the publisher waits for: it never misses a message, and a
    /// publisher that gets a full ring ahead of it waits (until it catches up, leaves, or
    /// its process dies).
    ///
    /// # Errors
    /// As [`subscriber`](Self::subscriber).
    pub fn subscriber_waited_for(&self) -> Result<Subscriber> {
        self.subscribe(true)
    }

    fn subscribe(&self, waited: bool) -> Result<Subscriber> {
        let me = Me::now();
        let mut taken = None;
        for i in 0..self.g.subs {
            if let Some(slot) = self.region.claim(self.g.sub(i), me.word, "subscribe")? {
                taken = Some((i, slot));
                break;
            }
        }
        let Some((i, slot)) = taken else {
            return Err(Error::new(
                ErrorKind::ResourceLimit,
                "subscribe",
                format!(
                    "all {} subscriber places are taken by live processes",
                    self.g.subs
                ),
            )
            .with_hint("make the broadcast with more subscribers (Options::subscribers)"));
        };
        let base = self.g.sub(i);
        let flags = if waited { WAIT_FOR_ME } else { 0 };
        let cursor = loop {
            let c = self.region.word(HEAD).load(Ordering::Acquire);
            self.region.word(base + 1).store(c, Ordering::Release);
            self.region.word(base + 2).store(flags, Ordering::Release);
            if !waited {
                break c;
            }
            // Tell the publisher to re-read the cursors before its next message. Either
            // it sees the bump before publishing message `h + 1` (h: the head read below),
            // or we see a later head (SeqCst fences on both sides): if no message from `c`
            // on can have been overwritten yet, `c` is safe; else try again from further on.
            self.region.word(JOINS).fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let h = self.region.word(HEAD).load(Ordering::Acquire);
            if h.wrapping_sub(c) < self.g.slots {
                break c;
            }
        };
        Ok(Subscriber {
            region: Arc::clone(&self.region),
            g: self.g,
            me,
            slot,
            base,
            cursor,
            waited,
            missed: 0,
            spin: self.spin,
            last_look: Instant::now(),
        })
    }

    /// The largest message, in bytes.
    pub fn message_size(&self) -> usize {
        self.g.size
    }

    /// How many messages the region keeps.
    pub fn slots(&self) -> u64 {
        self.g.slots
    }
}

/// The publishing end of a [`Broadcast`].
pub struct Publisher {
    region: Arc<Guarded>,
    g: Geometry,
    me: Me,
    /// The claim on the publisher's slot (its lock goes when the publisher drops).
    slot: Slot,
    /// The sequence number of the next message.
    head: u64,
    /// The lowest cursor of the waited-for subscribers, as last computed.
    floor: u64,
    /// The join count the floor was computed at.
    joins: u64,
    spin: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("next", &self.head).finish()
    }
}

impl Publisher {
    /// Publish `msg` to every subscriber; returns its sequence number. Waits only for
    /// subscribers joined with [`Broadcast::subscriber_waited_for`] that are a full ring
    /// behind.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a message larger than the slots.
    pub fn publish(&mut self, msg: &[u8]) -> Result<u64> {
        self.publish_how(msg, None, true)
            .map(|s| s.expect("waited without a deadline"))
    }

    /// Publish `msg` unless a waited-for subscriber is a full ring behind: `None` then.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn try_publish(&mut self, msg: &[u8]) -> Result<Option<u64>> {
        self.publish_how(msg, None, false)
    }

    /// Publish `msg`, waiting at most `timeout` for slow waited-for subscribers.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn publish_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<Option<u64>> {
        self.publish_how(msg, Instant::now().checked_add(timeout), true)
    }

    /// Publish a plain value by copy.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub fn publish_value<T: bytemuck::NoUninit>(&mut self, value: &T) -> Result<u64> {
        self.publish(bytemuck::bytes_of(value))
    }

    fn publish_how(&mut self, msg: &[u8], deadline: Option<Instant>, block: bool) -> Result<Option<u64>> {
        self.me.check("publish")?;
        if msg.len() > self.g.size {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "publish",
                format!(
                    "a message of {} bytes is larger than the slots ({} bytes)",
                    msg.len(),
                    self.g.size
                ),
            ));
        }
        let n = self.head;
        // A waited-for subscriber joined since the floor was computed: look again. (The
        // fence of the previous message's notify orders this load after its head store.)
        let joins = self.region.word(JOINS).load(Ordering::SeqCst);
        if joins != self.joins {
            self.joins = joins;
            self.floor = self.floor_now(false);
        }
        if n.wrapping_sub(self.floor) >= self.g.slots && !self.room(block, deadline)? {
            return Ok(None);
        }
        let at = self.g.slot(n);
        let seq = self.region.word(at / 8);
        seq.store(n.wrapping_mul(2).wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.region
            .word(at / 8 + 1)
            .store(msg.len() as u64, Ordering::Relaxed);
        self.region.copy_in(at + 16, msg);
        seq.store(n.wrapping_mul(2).wrapping_add(2), Ordering::Release);
        self.head = n.wrapping_add(1);
        self.region.word(HEAD).store(self.head, Ordering::Release);
        wait::notify(self.region.word(PUB_EVENT));
        Ok(Some(n))
    }

    /// The lowest cursor of the live waited-for subscribers (`head` if none); releases
    /// the places of subscribers whose process died.
    fn floor_now(&self, look: bool) -> u64 {
        let mut floor = self.head;
        for i in 0..self.g.subs {
            let base = self.g.sub(i);
            let owner = self.region.word(base).load(Ordering::Acquire);
            if owner == 0 || self.region.word(base + 2).load(Ordering::Acquire) & WAIT_FOR_ME == 0 {
                continue;
            }
            if look && !self.region.occupied(base) {
                // Its process died: it holds nobody back any more.
                let _ =
                    self.region
                        .word(base)
                        .compare_exchange(owner, 0, Ordering::SeqCst, Ordering::Relaxed);
                continue;
            }
            let c = self.region.word(base + 1).load(Ordering::Acquire);
            // A cursor ahead of us or a ring behind is garbage: it cannot hold us back.
            if self.head.wrapping_sub(c) <= self.g.slots
                && self.head.wrapping_sub(c) > self.head.wrapping_sub(floor)
            {
                floor = c;
            }
        }
        floor
    }

    #[cold]
    fn room(&mut self, block: bool, deadline: Option<Instant>) -> Result<bool> {
        self.floor = self.floor_now(true);
        if self.head.wrapping_sub(self.floor) < self.g.slots {
            return Ok(true);
        }
        if !block {
            return Ok(false);
        }
        let region = Arc::clone(&self.region);
        let this = &*self;
        let waited = wait::wait_for(
            region.word(SPACE_EVENT),
            self.spin,
            deadline,
            || this.head.wrapping_sub(this.floor_now(false)) < this.g.slots,
            |look| {
                // Looking releases the places of dead subscribers: the next ready() skips them.
                if look {
                    this.floor_now(true);
                }
                Ok(())
            },
        )?;
        self.floor = self.floor_now(false);
        Ok(matches!(waited, Waited::Ready))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.me.check("drop").is_ok() {
            self.slot.release(&self.region);
            // Sleeping subscribers learn that nothing more will come.
            wake_all(self.region.word(PUB_EVENT));
        }
    }
}

/// A message received by a [`Subscriber`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message's sequence number (0 for the first ever published).
    pub seq: u64,
    /// How many messages this subscriber missed just before this one (overtaken).
    pub missed: u64,
    /// The bytes, copied out.
    pub data: Vec<u8>,
}

/// A subscribing end of a [`Broadcast`].
pub struct Subscriber {
    region: Arc<Guarded>,
    g: Geometry,
    me: Me,
    /// The claim on the subscriber's place (its lock goes when the subscriber drops).
    slot: Slot,
    base: usize,
    cursor: u64,
    waited: bool,
    missed: u64,
    spin: Duration,
    /// When the publisher's process was last looked at (async and try receives).
    last_look: Instant,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("next", &self.cursor)
            .field("waited_for", &self.waited)
            .finish()
    }
}

/// What a look at the next slot found.
enum Look {
    Got(Delivery),
    NotYet(u64),
}

impl Subscriber {
    /// The next message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the publisher is gone (closed, or its process died:
    /// noticed within 100 ms) and everything it published was read;
    /// [`ErrorKind::Corrupted`] for a slot holding garbage.
    pub fn recv(&mut self) -> Result<Delivery> {
        self.recv_how(None, true)
            .map(|d| d.expect("waited without a deadline"))
    }

    /// The next message if it is there now.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Option<Delivery>> {
        self.recv_how(None, false)
    }

    /// The next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        self.recv_how(Instant::now().checked_add(timeout), true)
    }

    /// The next message, waiting without blocking the thread: for async code (any
    /// runtime; see [`Receiver::recv_async`](super::Receiver::recv_async)).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "async")]
    pub async fn recv_async(&mut self) -> Result<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The poll form of [`recv_async`](Self::recv_async).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "async")]
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<Delivery>> {
        use std::task::Poll;
        match self.try_recv() {
            Ok(Some(d)) => return Poll::Ready(Ok(d)),
            Ok(None) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        if self.last_look.elapsed() >= wait::SLICE {
            self.last_look = Instant::now();
            if let Err(e) = publisher_present(&self.region, self.cursor, true) {
                return Poll::Ready(Err(e));
            }
        }
        // Announce the sleeper, then look once more: a message published in between is
        // either seen now or bumps the word the reactor waits on.
        let seq = wait::arm(self.region.word(PUB_EVENT));
        match self.look() {
            Ok(Look::Got(d)) => return Poll::Ready(Ok(d)),
            Ok(Look::NotYet(_)) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
        super::reactor::register(&self.region, PUB_EVENT, seq, cx.waker());
        Poll::Pending
    }

    /// The sequence number of the next message this subscriber will get (unless
    /// overtaken).
    pub fn next_seq(&self) -> u64 {
        self.cursor
    }

    fn recv_how(&mut self, deadline: Option<Instant>, block: bool) -> Result<Option<Delivery>> {
        self.me.check("recv")?;
        loop {
            let seen = match self.look()? {
                Look::Got(d) => return Ok(Some(d)),
                Look::NotYet(seen) => seen,
            };
            if !block {
                let look = self.last_look.elapsed() >= wait::SLICE;
                if look {
                    self.last_look = Instant::now();
                }
                publisher_present(&self.region, self.cursor, look)?;
                return Ok(None);
            }
            let region = Arc::clone(&self.region);
            let at = self.g.slot(self.cursor) / 8;
            let cursor = self.cursor;
            let waited = wait::wait_for(
                region.word(PUB_EVENT),
                self.spin,
                deadline,
                || region.word(at).load(Ordering::Acquire) != seen,
                |look| publisher_present(&region, cursor, look),
            )?;
            if let Waited::TimedOut = waited {
                return Ok(None);
            }
        }
    }

    /// Read the slot of our cursor once: a message, a lag (handled: the cursor moves on
    /// and the count grows), or nothing yet (the sequence word seen).
    fn look(&mut self) -> Result<Look> {
        let mut passes = 0u64;
        loop {
            let c = self.cursor;
            let at = self.g.slot(c);
            let seq = self.region.word(at / 8);
            let want = c.wrapping_mul(2).wrapping_add(2);
            let s1 = seq.load(Ordering::Acquire);
            if s1 == want {
                let len = self.region.word(at / 8 + 1).load(Ordering::Relaxed) as usize;
                let mut data = vec![0u8; len.min(self.g.size)];
                self.region.copy_out(at + 16, &mut data);
                fence(Ordering::Acquire);
                let s2 = seq.load(Ordering::Relaxed);
                if s2 == s1 {
                    if len > self.g.size {
                        return Err(Error::new(
                            ErrorKind::Corrupted,
                            "recv",
                            format!("message {c} claims {len} bytes in slots of {}", self.g.size),
                        ));
                    }
                    self.cursor = c.wrapping_add(1);
                    self.region
                        .word(self.base + 1)
                        .store(self.cursor, Ordering::Release);
                    if self.waited {
                        wait::notify(self.region.word(SPACE_EVENT));
                    }
                    let missed = std::mem::take(&mut self.missed);
                    return Ok(Look::Got(Delivery { seq: c, missed, data }));
                }
                // Overwritten while we copied: overtaken.
            } else if (s1.wrapping_sub(want) as i64) <= 0 {
                // Not published yet (or being written: 2c + 1).
                return Ok(Look::NotYet(s1));
            }
            // Overtaken: skip to the oldest message that may still be there. A real
            // overtaking has the head a whole ring past our cursor (the message in our
            // slot is a ring later); a later message in the slot without that is garbage.
            let head = self.region.word(HEAD).load(Ordering::Acquire);
            passes += 1;
            if head.wrapping_sub(c) < self.g.slots || passes > 2 * self.g.slots {
                return Err(Error::new(
                    ErrorKind::Corrupted,
                    "recv",
                    format!(
                        "slot {} holds sequence word {s1:#x}, later than message {c}, but the head is {head}",
                        c & (self.g.slots - 1)
                    ),
                )
                .with_hint("another process wrote over the broadcast's shared memory"));
            }
            let oldest = head.wrapping_sub(self.g.slots);
            let next = if (oldest.wrapping_sub(c) as i64) > 0 {
                oldest
            } else {
                c.wrapping_add(1)
            };
            self.missed = self.missed.wrapping_add(next.wrapping_sub(c));
            self.cursor = next;
        }
    }
}

/// An error once the publisher attached and is gone, with nothing left to read at
/// `cursor`.
fn publisher_present(region: &Region, cursor: u64, look: bool) -> Result<()> {
    if region.is_truncated() {
        return Err(region.truncated_error("recv"));
    }
    if region.word(EVER_PUB).load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let owner = region.word(PUB_OWNER).load(Ordering::Acquire);
    let gone = owner == 0 || (look && !region.occupied(PUB_OWNER));
    if gone && region.word(HEAD).load(Ordering::Acquire) == cursor {
        return Err(Error::new(
            ErrorKind::Disconnected,
            "recv",
            "the publisher is gone (closed, or its process died)",
        ));
    }
    Ok(())
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.me.check("drop").is_ok() {
            self.region.word(self.base + 2).store(0, Ordering::Release);
            self.slot.release(&self.region);
            if self.waited {
                wake_all(self.region.word(SPACE_EVENT));
            }
        }
    }
}
