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

use super::region::{Kind, Region, Shape, LINE};
use super::wait::{self, Me, Waiting};
use super::Guarded;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::Wait;

mod publisher;
mod subscriber;

pub use publisher::Publisher;
pub use subscriber::{Delivery, Subscriber};

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
            eager: self.len(),
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
    waiting: Waiting,
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
            waiting: Waiting::DEFAULT,
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

    /// How long a waiting endpoint of this process spins (or yields) before it sleeps, at
    /// most: default [`DEFAULT_SPIN`](crate::sync::DEFAULT_SPIN) (50 µs); zero sleeps at
    /// once, as [`Wait::Block`] does. Whether it spins at all is [`wait`](Self::wait)'s
    /// policy.
    pub fn spin(&mut self, spin: Duration) -> &mut Self {
        self.waiting.spin = spin;
        self
    }

    /// How a waiting endpoint of this process spends the time before it sleeps (default
    /// [`Wait::Adaptive`]: it spins only where that can help; see [`crate::sync::wait`]).
    pub fn wait(&mut self, how: Wait) -> &mut Self {
        self.waiting.how = how;
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
            waiting: self.waiting,
        })
    }
}

/// A broadcast region, from which the publisher and subscribers are attached. Cheap to
/// clone; keep it across `fork` and attach endpoints on each side.
#[derive(Clone)]
pub struct Broadcast {
    region: Arc<Guarded>,
    g: Geometry,
    waiting: Waiting,
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
            waiting: self.waiting,
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
            waiting: self.waiting,
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
