//! Message channels through shared memory: the course notes' parent and child talking
//! through a mapped page, grown into zero-copy IPC between any processes.
//!
//! ```
//! use mman::channel::Channel;
//! # fn main() -> mman::Result<()> {
//! // Anonymous shared memory: a child created by fork() after this inherits the channel.
//! let chan = Channel::anonymous(64 * 1024)?;
//! let mut tx = chan.sender()?;      // in the process that sends
//! let mut rx = chan.receiver()?;    // in the process that receives (here: the same one)
//! tx.send(b"hello through shared memory")?;
//! assert_eq!(rx.recv()?, b"hello through shared memory");
//! drop(tx);                          // the last sender leaves...
//! assert_eq!(rx.recv().unwrap_err().kind(), mman::ErrorKind::Disconnected);
//! # Ok(()) }
//! ```
//!
//! ## Kinds
//! * [`Channel`]: one [`Receiver`], up to [`MAX_SENDERS`] [`Sender`]s. With one sender it
//!   is an SPSC ring; each further sender gets a ring of its own (a *lane*), so senders
//!   never contend and each sender's messages arrive in order. Variable-length byte
//!   messages, typed values by copy ([`Sender::send_value`]), batches
//!   ([`Sender::send_batch`], [`Receiver::recv_batch`]) that wake the other side once,
//!   messages written and read in place in the ring by callers who vouch for their peers
//!   ([`Sender::send_in_place`], [`Receiver::recv_in_place`]), and large messages without
//!   copies ([`Sender::send_sealed`]: a sealed memfd, received as a view; the receives
//!   that copy take one up to a limit, [`Options::max_sealed`]). Large messages go
//!   through a [`pool`] of fixed-size slots beside the ring ([`Sender::loan`],
//!   [`Receiver::recv_borrowed`]; `send` uses it from [`Options::pool_threshold`] up):
//!   only a slot's index and length pass through the ring.
//! * [`broadcast`]: one publisher, any number of subscribers joining and leaving; a
//!   subscriber that falls behind is told exactly how many messages it missed, or the
//!   publisher waits for it.
//!
//! ## Where the memory comes from
//! * [`Channel::anonymous`]: `MAP_SHARED | MAP_ANONYMOUS`; children created by `fork`
//!   inherit it (the course notes' case). Keep the [`Channel`] across the fork and attach
//!   the endpoints in the process that uses them: an endpoint inherited by a child refuses
//!   to work there (it belongs to its parent).
//! * [`Channel::create`] / [`Channel::open`]: a named object `/mman.NAME`, mode 0600,
//!   created with `O_EXCL`; an existing object is used only if it carries a channel's
//!   header. The name is unlinked when the last handle anywhere goes (endpoints keep their
//!   handle alive; each handle holds a shared `flock` the kernel drops with its process);
//!   one left behind by crashed processes is recognisable and removable ([`remove_stale`]).
//! * [`Channel::memfd`] with [`Channel::send_to`] / [`Channel::recv_from`]: a memfd sealed
//!   against shrinking and growing, passed to an unrelated process over a Unix socket.
//!
//! ## Waiting
//! A waiting party waits as [`crate::sync::wait`] says ([`Options::wait`]; default
//! [`Wait::Adaptive`]): it spins, up to 50 µs ([`Options::spin`]), only while the
//! party that will answer runs on another CPU, yields the CPU to a peer that shares it, and
//! sleeps on a futex (beside CPU-bound load it never yields); an idle receiver costs nothing. A
//! notifier that wakes a sleeper leaves its CPU in the event word, so the woken party knows
//! next time whether a spin can help. Wake-ups are made only when someone sleeps. A sleeper wakes every 50 ms to check that the party it
//! waits for still exists, so a peer killed at any instant is noticed within 100 ms:
//! [`ErrorKind::Disconnected`]. Whether a peer exists is
//! the kernel's answer, not the shared memory's: each endpoint holds an OFD lock on the
//! bytes of its slot through a descriptor of its own, which the kernel drops when the
//! process dies or execs; a peer writing into the region cannot fake one. A child created
//! by `fork` does not keep its parent's endpoints alive, however many the parent holds and
//! whenever the fork comes: the descriptors it inherits are closed as it starts.
//!
//! ## Soundness
//! Every access mman makes to the shared region is an 8-byte atomic or a copy made of
//! them (the crate's one scheme); messages are copied out into this process's memory, and the only
//! reference into shared memory a safe function hands out is a [`Message::Sealed`] view of
//! a memfd whose seals (checked by the receiver) forbid any change. Callers who want a
//! message's bytes where they lie in the ring ([`Sender::send_in_place`],
//! [`Receiver::recv_in_place`]: no copy) call an `unsafe fn` and vouch that nothing but
//! mman's endpoints writes the channel's memory, before the call or meanwhile (a forged
//! position or header could make one endpoint write bytes the other accesses in place).
//! Offsets are computed from a configuration validated when the region is opened and kept
//! privately; everything a peer can write (positions, lengths, owners) is checked before
//! use, so a peer writing garbage makes operations fail with [`ErrorKind::Corrupted`],
//! never read or write outside the region, and every wait ends (a dead or vanished peer is
//! noticed, and every `*_timeout` form bounds it).

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

pub mod broadcast;
mod lanes;
pub mod pool;
#[cfg(feature = "async")]
mod reactor;
mod receiver;
mod region;
mod sealed;
mod sender;
#[cfg(test)]
mod tests;
mod wait;

pub use lanes::{Message, MAX_SENDERS};
pub use pool::{Borrowed, Loan};
pub use receiver::Receiver;
pub use sender::Sender;

use crate::sync::Wait;
use lanes::Layout;
use region::{Kind, Region, Shape};
use wait::Waiting;

/// How to make a [`Channel`]: capacity, number of senders, how to wait, the largest
/// sealed hand-off a receive copies.
#[derive(Clone, Debug)]
pub struct Options {
    capacity: usize,
    senders: usize,
    waiting: Waiting,
    max_sealed: Option<usize>,
    pool_slots: usize,
    pool_slot_size: usize,
    pool_threshold: usize,
}

/// The default limit of a sealed hand-off copied by a receive, in rings: 16 times the
/// capacity (1 MiB for the default 64 KiB ring).
pub const SEALED_RINGS: usize = 16;

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// 64 KiB per sender, one sender, the default waiting ([`Wait::Adaptive`], 50 µs), a
    /// pool of 4 slots of 1 MiB for messages of 32 KiB and more.
    pub fn new() -> Self {
        Options {
            capacity: 64 * 1024,
            senders: 1,
            waiting: Waiting::DEFAULT,
            max_sealed: None,
            pool_slots: pool::DEFAULT_SLOTS,
            pool_slot_size: pool::DEFAULT_SLOT_SIZE,
            pool_threshold: pool::DEFAULT_THRESHOLD,
        }
    }

    /// The channel's slot pool (see [`pool`]): `slots` slots (0 to [`pool::MAX_SLOTS`]; 0:
    /// no pool) of `slot_size` bytes each (a multiple of 4096, at most
    /// [`pool::MAX_SLOT_SIZE`]), shared by all senders. Default 4 slots of 1 MiB.
    pub fn pool(&mut self, slots: usize, slot_size: usize) -> &mut Self {
        self.pool_slots = slots;
        self.pool_slot_size = slot_size;
        self
    }

    /// The size from which this process's [`Sender::send`] (and the other sends of byte
    /// messages) go through the pool, for messages no larger than a slot: default 32 KiB.
    /// `usize::MAX` keeps every message in the ring.
    pub fn pool_threshold(&mut self, bytes: usize) -> &mut Self {
        self.pool_threshold = bytes;
        self
    }

    /// The ring size of each sender's lane, in bytes: a power of two from 64 bytes to
    /// 1 TiB. A message may take up to the capacity less 16 bytes (its header, and the zero
    /// word written ahead of it).
    pub fn capacity(&mut self, bytes: usize) -> &mut Self {
        self.capacity = bytes;
        self
    }

    /// How many senders may be attached at once (1 to [`MAX_SENDERS`]): one lane each.
    pub fn senders(&mut self, n: usize) -> &mut Self {
        self.senders = n;
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

    /// The largest sealed hand-off ([`Sender::send_sealed`]) that the receives copying
    /// messages into this process ([`Receiver::recv`], `recv_into`, `try_recv`,
    /// `recv_timeout`, `recv_value`, `recv_serde`, `recv_async`) take, in bytes; default
    /// [`SEALED_RINGS`] times the capacity. The size of a memfd is its sender's choice (a
    /// sparse one of a terabyte costs it nothing); a larger one is refused with
    /// [`ErrorKind::ResourceLimit`] before anything is mapped or copied, and consumed, so
    /// the next message follows. [`Receiver::recv_message`] (a sealed view, no copy),
    /// `recv_in_place` and `recv_batch` (which lend a view) map without allocating and take
    /// any size. A setting of the process that attaches the receiver, as `spin` is.
    pub fn max_sealed(&mut self, bytes: usize) -> &mut Self {
        self.max_sealed = Some(bytes);
        self
    }

    fn shape(&self) -> Result<(Shape, Layout)> {
        let bad = |why| Error::new(ErrorKind::InvalidInput, "make channel", why);
        let layout = Layout::check(self.senders as u64, self.capacity as u64).map_err(bad)?;
        let pool = pool::PoolShape::check(self.pool_slots as u64, self.pool_slot_size as u64).map_err(bad)?;
        let layout = layout.with_pool(pool);
        Ok((shape_of(layout), layout))
    }

    /// A channel in anonymous shared memory, inherited by children created by `fork`.
    ///
    /// # Errors
    /// Invalid options; the memory cannot be mapped.
    pub fn anonymous(&self) -> Result<Channel> {
        let (shape, layout) = self.shape()?;
        self.handle(Region::anonymous(shape)?, layout)
    }

    /// A channel in a new named object `/mman.NAME` (mode 0600; fails if the name exists).
    ///
    /// # Errors
    /// Invalid options or name; [`ErrorKind::AddressInUse`] when the name is taken.
    pub fn create(&self, name: &str) -> Result<Channel> {
        let (shape, layout) = self.shape()?;
        self.handle(Region::create(name, shape)?, layout)
    }

    /// A channel in a memfd, to hand to another process with [`Channel::send_to`].
    ///
    /// # Errors
    /// Invalid options; the memfd cannot be made.
    pub fn memfd(&self) -> Result<Channel> {
        let (shape, layout) = self.shape()?;
        self.handle(Region::memfd(shape)?, layout)
    }

    /// Open the channel `/mman.NAME` another process created (the capacity and senders
    /// are the creator's; the spin is this one's).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`]; [`ErrorKind::PermissionDenied`] for an object of another
    /// user or open to others; [`ErrorKind::Corrupted`] for an object that is not a channel.
    pub fn open(&self, name: &str) -> Result<Channel> {
        let region = Region::open(name, Kind::Lanes, check_lanes)?;
        let layout = layout_of(region.shape());
        self.handle(region, layout)
    }

    /// Receive a channel sent with [`Channel::send_to`] over a Unix socket.
    ///
    /// # Errors
    /// No descriptor came; it is not sealed against shrinking; it holds no channel.
    pub fn recv_from(&self, sock: &std::os::unix::net::UnixStream) -> Result<Channel> {
        let (fd, _) = crate::shm::recv_fd(sock)?;
        let region = Region::from_memfd(crate::shm::Memfd::from_fd(fd)?, Kind::Lanes, check_lanes)?;
        let layout = layout_of(region.shape());
        self.handle(region, layout)
    }

    fn handle(&self, region: Region, layout: Layout) -> Result<Channel> {
        Ok(Channel {
            region: Arc::new(Guarded::new(region)?),
            layout,
            waiting: self.waiting,
            max_sealed: self.max_sealed.unwrap_or(layout.cap.saturating_mul(SEALED_RINGS)),
            threshold: self.pool_threshold,
        })
    }
}

fn shape_of(layout: Layout) -> Shape {
    Shape {
        kind: Kind::Lanes,
        params: [layout.lanes as u64, layout.cap as u64, layout.pool.shape.encode()],
        len: layout.len(),
        // A pool's slots are backed when first loaned.
        eager: if layout.pool.exists() {
            layout.pool.data(0)
        } else {
            layout.len()
        },
    }
}

fn layout_of(shape: Shape) -> Layout {
    // The shape was validated (check_lanes): these cannot fail.
    let layout = Layout::check(shape.params[0], shape.params[1]).expect("a validated shape");
    layout.with_pool(pool::PoolShape::decode(shape.params[2]).expect("a validated shape"))
}

fn check_lanes(params: [u64; 3]) -> Result<Shape> {
    let bad = |why| Error::new(ErrorKind::Corrupted, "open channel", why);
    let layout = Layout::check(params[0], params[1]).map_err(bad)?;
    let pool = pool::PoolShape::decode(params[2]).map_err(bad)?;
    Ok(shape_of(layout.with_pool(pool)))
}

/// A region and this handle's share of it (`flock(LOCK_SH)` on a description of its own):
/// the name is unlinked by the last handle anywhere, the one whose `LOCK_EX | LOCK_NB`
/// succeeds. Endpoints keep their handle alive. Locks the kernel drops with a dead process,
/// so a crash leaves a name that the next `remove_stale` takes.
struct Guarded {
    region: Region,
    share: crate::sys::liveness::Held,
}

impl Guarded {
    fn new(region: Region) -> Result<Guarded> {
        let share = region.share()?;
        Ok(Guarded { region, share })
    }
}

impl std::ops::Deref for Guarded {
    type Target = Region;
    fn deref(&self) -> &Region {
        &self.region
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.region.name().is_some() && crate::sys::liveness::try_exclusive(self.share.fd()) {
            self.region.unlink_if_ours();
        }
    }
}

/// A channel's shared region, from which endpoints are attached. Cheap to clone (a
/// reference count); keep it across `fork` and attach endpoints on each side.
///
/// ```
/// # fn main() -> mman::Result<()> {
/// use mman::channel::Channel;
/// let name = format!("doc-chan-{}", std::process::id());
/// let chan = Channel::create(&name, 4096)?; // /mman.NAME, mode 0600
/// let peer = Channel::open(&name)?; // what another process does
/// let mut rx = chan.receiver()?;
/// let mut tx = peer.sender()?;
/// tx.send(b"ping")?;
/// assert_eq!(rx.recv()?, b"ping");
/// assert!(chan.receiver().is_err()); // one receiver at a time
/// # Ok(()) } // the name goes with the last handle
/// ```
#[derive(Clone)]
pub struct Channel {
    region: Arc<Guarded>,
    layout: Layout,
    waiting: Waiting,
    max_sealed: usize,
    /// This process's pool threshold (`Options::pool_threshold`).
    threshold: usize,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.region.name())
            .field("senders", &self.layout.lanes)
            .field("capacity", &self.layout.cap)
            .finish()
    }
}

impl Channel {
    /// An SPSC channel of `capacity` bytes in anonymous shared memory (see
    /// [`Options::anonymous`]).
    ///
    /// # Errors
    /// As [`Options::anonymous`].
    pub fn anonymous(capacity: usize) -> Result<Channel> {
        Options::new().capacity(capacity).anonymous()
    }

    /// An SPSC channel of `capacity` bytes named `/mman.NAME` (see [`Options::create`]).
    ///
    /// # Errors
    /// As [`Options::create`].
    pub fn create(name: &str, capacity: usize) -> Result<Channel> {
        Options::new().capacity(capacity).create(name)
    }

    /// Open the channel `/mman.NAME` (see [`Options::open`]).
    ///
    /// # Errors
    /// As [`Options::open`].
    pub fn open(name: &str) -> Result<Channel> {
        Options::new().open(name)
    }

    /// An SPSC channel of `capacity` bytes in a memfd (see [`Options::memfd`]).
    ///
    /// # Errors
    /// As [`Options::memfd`].
    pub fn memfd(capacity: usize) -> Result<Channel> {
        Options::new().capacity(capacity).memfd()
    }

    /// Send this channel (made by [`memfd`](Self::memfd)) to the process at the other end
    /// of `sock`, which takes it with [`recv_from`](Self::recv_from).
    ///
    /// # Errors
    /// The channel is not in a memfd; `sendmsg` fails.
    pub fn send_to(&self, sock: &std::os::unix::net::UnixStream) -> Result<()> {
        self.region.send_fd(sock)
    }

    /// Take a channel sent with [`send_to`](Self::send_to) (see [`Options::recv_from`]).
    ///
    /// # Errors
    /// As [`Options::recv_from`].
    pub fn recv_from(sock: &std::os::unix::net::UnixStream) -> Result<Channel> {
        Options::new().recv_from(sock)
    }

    /// Attach a sender in this process (it takes a free lane, or one whose sender died).
    ///
    /// # Errors
    /// [`ErrorKind::ResourceLimit`] when every lane has a live sender;
    /// [`ErrorKind::Corrupted`] for garbage in the lane.
    pub fn sender(&self) -> Result<Sender> {
        let mut tx = Sender::attach(self.shared(), self.layout, self.waiting)?;
        tx.use_pool_from(self.threshold);
        Ok(tx)
    }

    /// Attach the receiver in this process (or take over from one that died).
    ///
    /// # Errors
    /// [`ErrorKind::AddressInUse`] while a live receiver is attached;
    /// [`ErrorKind::Corrupted`] for garbage in the lanes.
    pub fn receiver(&self) -> Result<Receiver> {
        Receiver::attach(self.shared(), self.layout, self.waiting, self.max_sealed)
    }

    fn shared(&self) -> Arc<Guarded> {
        Arc::clone(&self.region)
    }

    /// Each sender's ring, in bytes.
    pub fn capacity(&self) -> usize {
        self.layout.cap
    }

    /// The largest message a sender of this handle sends, in bytes: a pool slot's size
    /// when every size past the ring's limit goes through the pool (the threshold is at
    /// most one past it), else the ring's limit.
    pub fn max_message(&self) -> usize {
        let min = if self.layout.pool.exists() {
            self.threshold
        } else {
            usize::MAX
        };
        largest(&self.layout, min)
    }

    /// The pool's slot count and slot size (0 slots: no pool).
    pub fn pool(&self) -> (usize, usize) {
        (self.layout.pool.shape.slots, self.layout.pool.shape.slot_size)
    }

    /// The largest sealed hand-off its receivers copy (see [`Options::max_sealed`]).
    pub fn max_sealed(&self) -> usize {
        self.max_sealed
    }

    /// How many senders may be attached at once.
    pub fn max_senders(&self) -> usize {
        self.layout.lanes
    }

    /// The object's name (`/mman.NAME`), for a named channel.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

/// The largest message of a sender of `layout` that sends from `pool_min` bytes up
/// through the pool.
fn largest(layout: &Layout, pool_min: usize) -> usize {
    let ring = layout.max_message();
    if pool_min <= ring + 1 {
        ring.max(layout.pool.shape.slot_size)
    } else {
        ring
    }
}

/// Remove the named channel or broadcast `/mman.NAME` if no live process holds a handle
/// to it (left behind by processes that crashed). Returns whether it was removed; an
/// object that is not a channel is an error and is left alone.
///
/// # Errors
/// [`ErrorKind::NotFound`]; [`ErrorKind::Corrupted`] for an object that is not a channel;
/// [`ErrorKind::PermissionDenied`] for another user's object.
pub fn remove_stale(name: &str) -> Result<bool> {
    let region = match Region::open(name, Kind::Lanes, check_lanes) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::Corrupted => {
            Region::open(name, Kind::Broadcast, broadcast::check_shape).map_err(|_| e)?
        }
        Err(e) => return Err(e),
    };
    // Nobody holds a handle (their shares are locks the kernel dropped with them): ours is
    // the only description with a lock.
    let mine = region.share()?;
    if !crate::sys::liveness::try_exclusive(mine.fd()) {
        return Ok(false);
    }
    region.unlink_if_ours();
    Ok(true)
}
