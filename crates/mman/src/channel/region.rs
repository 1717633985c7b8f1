//! The shared region behind a channel: its backing (anonymous, named, memfd), its header of
//! configuration words, and the only code that turns offsets into accesses.
//!
//! Every access goes through [`Region::word`] (an `AtomicU64`) or [`Region::copy_in`] /
//! [`Region::copy_out_append`] / [`Region::write_record`] (copies made of aligned 8-byte
//! atomics), the crate's one access scheme for shared memory; the only exceptions are the
//! plain slices of [`Region::payload`] and [`Region::payload_mut`], `unsafe fn`s for the
//! channel's in-place sends and receives, whose callers vouch that nothing else touches
//! those bytes meanwhile. Offsets come from a [`Shape`] validated once, when the region
//! is opened, and kept in this process: a peer that rewrites the configuration words later
//! changes nothing here, so no offset can leave the region.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::map::{MapOptions, Mapping};
use crate::shm::{self, SharedMemory};
use crate::sys;

/// "MMANCHAN", little-endian: the first word of every channel region.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"MMANCHAN");
/// The layout version; bumped when the layout changes.
pub(super) const VERSION: u64 = 3;
/// A cache line pair (128 bytes, in words): the unit of separation between words written
/// by different parties (adjacent-line prefetchers fetch lines in pairs).
pub(super) const LINE: usize = 16;

/// Configuration words of line 0.
const W_MAGIC: usize = 0;
const W_KIND: usize = 1;
const W_PARAMS: usize = 2; // 3 words of kind-specific parameters
const W_LEN: usize = 5;
const W_READY: usize = 6;
const READY: u64 = u64::from_le_bytes(*b"ready!\0\0");

/// What kind of channel a region holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Lanes of byte rings: one receiver, one sender per lane (SPSC is one lane).
    Lanes = 1,
    /// One publisher, slots read by many subscribers.
    Broadcast = 2,
}

/// The validated shape of a region: the kind, its three parameters, and the total length.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub kind: Kind,
    pub params: [u64; 3],
    pub len: usize,
    /// The bytes from the start backed in the object when the region is made or opened; the
    /// rest (a pool's slots) is backed when first used ([`Region::back`]).
    pub eager: usize,
}

enum Backing {
    /// A memfd mapped `MAP_SHARED`, inherited (with its descriptor) by children created
    /// with `fork`: anonymous memory with a descriptor, for the endpoints' locks.
    Anonymous(shm::Memfd),
    /// A named object; `unlink` is done by hand when the last endpoint goes.
    Named(SharedMemory),
    /// A memfd sealed against shrinking and growing, passable over a Unix socket.
    Memfd(shm::Memfd),
}

/// Map a region's memory shared and writable, without taking any page yet.
fn map_shared(fd: &impl AsFd) -> Result<Mapping> {
    MapOptions::new().read_write().shared().map(fd.as_fd())
}

/// Back a range of a region (its first `eager` bytes when made or opened) in its object ([`Mapping::allocate`]) and make
/// their page-table entries now (`MADV_POPULATE_WRITE`): the ring's first lap would
/// otherwise take a page fault every 4 KiB on each side, in the middle of the messages. The
/// creator's `fallocate` backed them already, but an object opened by name or received may
/// have been left sparse: a full `/dev/shm` is an error when the channel is made or opened,
/// never a fault in the middle of a send. The bytes after `eager` (a pool's slots) are
/// backed by the sender that first loans each slot ([`Region::back`]).
fn prepare(map: &Mapping, range: std::ops::Range<usize>) -> Result<()> {
    map.allocate(range.clone())?;
    // Only speed is at stake (a kernel before 5.14 lacks the advice; the pages then fault
    // in when first touched, backed all the same).
    let _ = map.advise(range, crate::map::Advice::PopulateWrite);
    Ok(())
}

/// An endpoint's claim on its slot: the owner word it wrote, and the description whose
/// lock on the word's bytes says it lives. Dropping it releases the lock.
pub(super) struct Slot {
    word: usize,
    me: u64,
    _held: sys::liveness::Held,
}

impl Slot {
    /// Clear the owner word if it still holds ours (the lock goes when `self` drops).
    pub fn release(&self, region: &Region) {
        // SeqCst: two parties leaving at once cannot both miss the other's departure.
        let _ = region
            .word(self.word)
            .compare_exchange(self.me, 0, Ordering::SeqCst, Ordering::Relaxed);
    }
}

/// A mapped channel region and what backs it.
pub(super) struct Region {
    map: Mapping,
    base: usize,
    shape: Shape,
    backing: Backing,
}

// SAFETY: every access to the memory is atomic (words, or copies made of atomic words); the
// mapping itself is never changed after construction.
unsafe impl Sync for Region {}
// SAFETY: as above; the mapping may be unmapped from any thread.
unsafe impl Send for Region {}

impl Region {
    /// A fresh region of `shape` in anonymous shared memory (a memfd nobody else can open).
    pub fn anonymous(shape: Shape) -> Result<Region> {
        let fd = shm::Memfd::create("mman-channel", shape.eager as u64)?;
        fd.set_len(shape.len as u64)?;
        fd.add_seals(shm::Seals::SHRINK | shm::Seals::GROW)?;
        let map = map_shared(&fd)?;
        prepare(&map, 0..shape.eager)?;
        Ok(Region::init(map, shape, Backing::Anonymous(fd)))
    }

    /// A fresh region of `shape` in a new object `/mman.NAME` (mode 0600, O_EXCL).
    pub fn create(name: &str, shape: Shape) -> Result<Region> {
        let mut obj = SharedMemory::create_backed(name, shape.len as u64, shape.eager as u64)?;
        // The last endpoint unlinks it (see `Drop`), not the creating handle.
        obj.keep();
        let map = match map_shared(&obj).and_then(|m| prepare(&m, 0..shape.eager).map(|()| m)) {
            Ok(m) => m,
            Err(e) => {
                let _ = SharedMemory::unlink(name);
                return Err(e);
            }
        };
        Ok(Region::init(map, shape, Backing::Named(obj)))
    }

    /// A fresh region of `shape` in a memfd sealed against shrinking, growing and further
    /// seals, to hand to another process with [`shm::send_fd`].
    pub fn memfd(shape: Shape) -> Result<Region> {
        let fd = shm::Memfd::create("mman-channel", shape.eager as u64)?;
        fd.set_len(shape.len as u64)?;
        fd.add_seals(shm::Seals::SHRINK | shm::Seals::GROW | shm::Seals::SEAL)?;
        let map = map_shared(&fd)?;
        prepare(&map, 0..shape.eager)?;
        Ok(Region::init(map, shape, Backing::Memfd(fd)))
    }

    fn init(map: Mapping, shape: Shape, backing: Backing) -> Region {
        let region = Region {
            base: map.as_ptr() as usize,
            map,
            shape,
            backing,
        };
        region.word(W_MAGIC).store(MAGIC, Ordering::Relaxed);
        region
            .word(W_KIND)
            .store(VERSION | (shape.kind as u64) << 32, Ordering::Relaxed);
        for (i, p) in shape.params.iter().enumerate() {
            region.word(W_PARAMS + i).store(*p, Ordering::Relaxed);
        }
        region.word(W_LEN).store(shape.len as u64, Ordering::Relaxed);
        // Release: a peer that sees READY sees the configuration.
        region.word(W_READY).store(READY, Ordering::Release);
        region
    }

    /// Open the existing object `/mman.NAME` as a region of `kind`; `check` validates the
    /// parameters and returns the shape they imply.
    pub fn open(name: &str, kind: Kind, check: impl Fn([u64; 3]) -> Result<Shape>) -> Result<Region> {
        // The creator makes the object (empty), then gives it its size: an object caught
        // in between is given the same moment as one not yet initialised.
        let deadline = Instant::now() + Duration::from_millis(200);
        let obj = loop {
            match SharedMemory::open(name, 4096) {
                Ok(obj) => break obj,
                Err(e) if e.kind() == ErrorKind::InvalidInput && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        };
        let map = map_shared(&obj)?;
        Region::adopt(map, kind, check, Backing::Named(obj), Some(name))
    }

    /// Adopt a memfd received from another process: it must be sealed against shrinking
    /// (else a truncation could pull pages from under the channel) and hold a channel.
    pub fn from_memfd(
        fd: shm::Memfd,
        kind: Kind,
        check: impl Fn([u64; 3]) -> Result<Shape>,
    ) -> Result<Region> {
        fd.require_seals(shm::Seals::SHRINK)?;
        let map = map_shared(&fd)?;
        Region::adopt(map, kind, check, Backing::Memfd(fd), None)
    }

    fn adopt(
        map: Mapping,
        kind: Kind,
        check: impl Fn([u64; 3]) -> Result<Shape>,
        backing: Backing,
        name: Option<&str>,
    ) -> Result<Region> {
        let what = name.map_or_else(|| "the memfd".to_string(), |n| format!("/{}{n}", shm::PREFIX));
        let bad = |why: String| {
            Error::new(ErrorKind::Corrupted, "open channel", format!("{what} {why}"))
                .with_hint("it is not an mman channel of this kind and version; remove it if it is stale")
        };
        if map.len() < 4096 {
            return Err(bad(format!("is {} bytes, too small for a channel", map.len())));
        }
        let mut region = Region {
            base: map.as_ptr() as usize,
            map,
            shape: Shape {
                kind,
                params: [0; 3],
                len: 4096,
                eager: 4096,
            },
            backing,
        };
        // The creator writes the configuration first and READY last; a region caught in
        // between is given a moment (creation takes microseconds).
        let deadline = Instant::now() + Duration::from_millis(200);
        while region.word(W_READY).load(Ordering::Acquire) != READY {
            if Instant::now() > deadline {
                return Err(bad(
                    "was never initialised (its creator died while making it?)".into()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if region.word(W_MAGIC).load(Ordering::Relaxed) != MAGIC {
            return Err(bad("does not start with mman's channel mark".into()));
        }
        let kv = region.word(W_KIND).load(Ordering::Relaxed);
        if kv != VERSION | (kind as u64) << 32 {
            return Err(bad(format!(
                "is a channel of kind {} version {}, not kind {} version {VERSION}",
                kv >> 32,
                kv & 0xffff_ffff,
                kind as u64
            )));
        }
        let params = [0, 1, 2].map(|i| region.word(W_PARAMS + i).load(Ordering::Relaxed));
        let shape = check(params).map_err(|e| bad(e.to_string()))?;
        if shape.len as u64 != region.word(W_LEN).load(Ordering::Relaxed) || shape.len > region.map.len() {
            return Err(bad(format!(
                "has parameters {params:?} that need {} bytes, but holds {}",
                shape.len,
                region.map.len()
            )));
        }
        prepare(&region.map, 0..shape.eager.min(shape.len))?;
        region.shape = shape;
        Ok(region)
    }

    /// Back `len` bytes at `offset` (past the eager part: a pool slot) in the object and
    /// make their page-table entries now, as [`prepare`] does for the rest at the start.
    ///
    /// # Errors
    /// [`ErrorKind::StorageFull`] when `/dev/shm` lacks the room; the error of `fallocate`.
    pub fn back(&self, offset: usize, len: usize) -> Result<()> {
        prepare(&self.map, offset..offset.saturating_add(len).min(self.map.len()))
    }

    /// The shape validated when the region was made or opened.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The word at `index` (in 8-byte words from the start).
    #[inline(always)]
    pub fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index * 8 + 8 <= self.map.len());
        // SAFETY: in bounds (checked), 8-aligned (the mapping is page-aligned), mapped
        // shared read-write for as long as `self` lives (the mapping is never remapped or
        // reprotected). Only atomic accesses are made to it.
        unsafe { AtomicU64::from_ptr((self.base + index * 8) as *mut u64) }
    }

    /// Copy `src` into the region at byte `offset` (8-aligned or not) with atomic words.
    #[inline(always)]
    pub fn copy_in(&self, offset: usize, src: &[u8]) {
        assert!(offset <= self.map.len() && src.len() <= self.map.len() - offset);
        // SAFETY: in bounds (checked), mapped read-write; every access to these bytes is
        // made of aligned 8-byte atomics (this module, and the peers running this code).
        unsafe { sys::words::copy_in(src, (self.base + offset) as *mut u8) }
    }

    /// Write a record at the 8-aligned byte `offset`: `payload` as whole words from
    /// `offset + 8` (the last padded with zeros), a zero word after them, and then, last,
    /// `header` at `offset` with `Release`: a reader that sees the header sees the rest.
    #[inline(always)]
    pub fn write_record(&self, offset: usize, header: u64, payload: &[u8]) {
        self.check_record(offset, payload.len());
        // SAFETY: in bounds and aligned (checked), mapped read-write; every access to these
        // bytes is an aligned 8-byte atomic.
        unsafe { sys::words::copy_in_padded(payload, (self.base + offset + 8) as *mut u8) };
        self.close_record(offset, header, payload.len());
    }

    /// Fail unless a record of a `len`-byte payload at byte `offset` (its header, payload
    /// padded to 8 bytes, and the zero word after it) lies in the region, 8-aligned.
    #[inline(always)]
    fn check_record(&self, offset: usize, len: usize) {
        let size = self.map.len();
        assert!(
            offset.is_multiple_of(8)
                && len <= size
                && offset <= size
                && 16 + len.next_multiple_of(8) <= size - offset
        );
    }

    /// Finish the record at `offset` whose `len`-byte payload is written: the zero word
    /// after it, then `header` with `Release`.
    #[inline(always)]
    pub fn close_record(&self, offset: usize, header: u64, len: usize) {
        let after = (offset + 8 + len.next_multiple_of(8)) / 8;
        self.word(after).store(0, Ordering::Relaxed);
        self.word(offset / 8).store(header, Ordering::Release);
    }

    /// The payload bytes of a record of `len` bytes at `offset`, as a plain slice to write
    /// in place; its padding zeroed (as `write_record` leaves it).
    ///
    /// # Safety
    /// Nothing else (no thread of any process) accesses these bytes while the slice lives,
    /// and the record is not published (its header not written) until it is gone.
    // The slice is into the shared mapping, not into `self`; the contract rules out any
    // other access to it while it lives.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    pub unsafe fn payload_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        self.check_record(offset, len);
        if !len.is_multiple_of(8) {
            // The last word, padding included, before the slice covers part of it.
            self.word((offset + 8 + len) / 8).store(0, Ordering::Relaxed);
        }
        // SAFETY: in bounds (checked), mapped read-write for as long as `self` lives; no
        // other access while the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut((self.base + offset + 8) as *mut u8, len) }
    }

    /// The payload bytes of the record of `len` bytes at `offset`, as a plain slice to read
    /// in place.
    ///
    /// # Safety
    /// Nothing writes these bytes while the slice lives (the record was published, and is
    /// not given back to its sender until the slice is gone).
    #[inline(always)]
    pub unsafe fn payload(&self, offset: usize, len: usize) -> &[u8] {
        let size = self.map.len();
        assert!(offset <= size && len <= size && 8 + len <= size - offset);
        // SAFETY: in bounds (checked), mapped for as long as `self` lives; no writer while
        // the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts((self.base + offset + 8) as *const u8, len) }
    }

    /// Append `len` bytes from the region at byte `offset` to `dst` with atomic words.
    #[inline(always)]
    pub fn copy_out_append(&self, offset: usize, len: usize, dst: &mut Vec<u8>) {
        assert!(offset <= self.map.len() && len <= self.map.len() - offset);
        // SAFETY: as in copy_in.
        unsafe { sys::words::copy_out_append((self.base + offset) as *const u8, len, dst) }
    }

    /// Copy `dst.len()` bytes from the region at byte `offset` into `dst` with atomic words.
    #[inline]
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset <= self.map.len() && dst.len() <= self.map.len() - offset);
        // SAFETY: as in copy_in.
        unsafe { sys::words::copy_out((self.base + offset) as *const u8, dst) }
    }

    /// Copy `len` bytes, rounded up to whole words, from byte `from` of `src` to byte `to`
    /// of this region (both 8-aligned), word by atomic word: from one pool slot to another.
    pub fn copy_words_from(&self, to: usize, src: &Region, from: usize, len: usize) {
        let n = len.next_multiple_of(8);
        assert!(to.is_multiple_of(8) && from.is_multiple_of(8));
        assert!(to <= self.map.len() && n <= self.map.len() - to);
        assert!(from <= src.map.len() && n <= src.map.len() - from);
        // SAFETY: in bounds and aligned (checked), both mapped (readable; this one writable)
        // for as long as the regions live; every access to them is an aligned 8-byte atomic.
        unsafe { sys::words::copy_words((src.base + from) as *const u8, (self.base + to) as *mut u8, n / 8) }
    }

    /// `len` bytes at byte `offset` as a plain slice to write in place.
    ///
    /// # Safety
    /// Nothing else (no thread of any process) accesses these bytes while the slice lives.
    // The slice is into the shared mapping, not into `self`; the contract rules out any
    // other access to it while it lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset <= self.map.len() && len <= self.map.len() - offset);
        // SAFETY: in bounds (checked), mapped read-write for as long as `self` lives; no
        // other access while the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut((self.base + offset) as *mut u8, len) }
    }

    /// `len` bytes at byte `offset` as a plain slice to read in place.
    ///
    /// # Safety
    /// Nothing writes these bytes while the slice lives.
    pub unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset <= self.map.len() && len <= self.map.len() - offset);
        // SAFETY: in bounds (checked), mapped for as long as `self` lives; no writer while
        // the slice lives (the caller's contract).
        unsafe { std::slice::from_raw_parts((self.base + offset) as *const u8, len) }
    }

    /// The word at byte `offset` (8-aligned).
    #[inline(always)]
    pub fn word_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8));
        self.word(offset / 8)
    }

    /// Whether a peer truncated the object under the mapping, or a page of it could not be
    /// backed when touched (an object a peer left sparse on a full `/dev/shm`): the SIGBUS
    /// handler replaced the lost pages with zeros and marked the mapping, so this process no
    /// longer shares them with its peers.
    pub fn is_truncated(&self) -> bool {
        self.map.is_truncated() || self.map.is_unbacked()
    }

    /// The error for a region found truncated (or with a page that could not be backed).
    pub fn truncated_error(&self, op: &'static str) -> Error {
        if self.map.is_unbacked() {
            return Error::new(
                ErrorKind::StorageFull,
                op,
                "a page of the channel's shared object could not be backed when touched: the tmpfs \
                 holding it is full (another process left the object sparse)",
            )
            .with_hint("the channel cannot be used any more: free room in /dev/shm and make a new one");
        }
        Error::new(
            ErrorKind::Corrupted,
            op,
            "the channel's shared object was truncated by another process",
        )
        .with_hint("the channel cannot be used any more: make a new one")
    }

    /// The descriptor of the memory behind the region.
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match &self.backing {
            Backing::Anonymous(fd) | Backing::Memfd(fd) => fd.as_fd(),
            Backing::Named(obj) => obj.as_fd(),
        }
    }

    /// A fresh description of the region's file, for a lock of its own.
    fn description(&self, op: &'static str) -> Result<sys::liveness::Held> {
        sys::liveness::Held::reopen(self.fd())
            .map_err(|e| Error::os(op, e).with_path(Some("/proc/self/fd".as_ref())))
    }

    /// Claim the endpoint slot whose owner word is `word`: take the kernel lock on its
    /// bytes (see `sys::liveness`), then write `me` into it. `None` while a live endpoint
    /// holds it.
    pub fn claim(&self, word: usize, me: u64, op: &'static str) -> Result<Option<Slot>> {
        let held = self.description(op)?;
        let taken = sys::liveness::try_lock_range(held.fd(), word as u64 * 8, 8)
            .map_err(|e| Error::os(op, e).with_hint("the file system does not support OFD locks"))?;
        if !taken {
            return Ok(None);
        }
        // Each claim writes a word of its own (a per-process count above the PID): a
        // party clearing the word of an owner it found dead can never clear, by
        // compare-and-swap from the same value, the word of a later claim of this process.
        static CLAIMS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let count = CLAIMS.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        let me = me | (count as u64) << 32;
        self.word(word).store(me, Ordering::SeqCst);
        Ok(Some(Slot {
            word,
            me,
            _held: held,
        }))
    }

    /// Whether a live endpoint holds the slot of owner word `word` (a lock the kernel
    /// drops when the holder dies: nothing written into the memory fakes it). When the
    /// kernel cannot tell, it is taken as held.
    pub fn occupied(&self, word: usize) -> bool {
        sys::liveness::range_locked(self.fd(), word as u64 * 8, 8).unwrap_or(true)
    }

    /// A handle's share of the region (`flock(LOCK_SH)` on a description of its own).
    pub fn share(&self) -> Result<sys::liveness::Held> {
        let held = self.description("flock")?;
        sys::liveness::share(held.fd()).map_err(|e| Error::os("flock", e))?;
        Ok(held)
    }

    /// The uid owning the memory (the creator's, for a named object or a memfd).
    pub fn owner_uid(&self) -> Option<u32> {
        sys::shm::owner(self.fd()).ok().map(|o| o.uid)
    }

    /// The object's name, for a named region.
    pub fn name(&self) -> Option<&str> {
        match &self.backing {
            Backing::Named(obj) => Some(obj.name()),
            _ => None,
        }
    }

    /// Send the memfd behind this region over a Unix socket (see `shm::send_fd`).
    pub fn send_fd(&self, sock: &std::os::unix::net::UnixStream) -> Result<()> {
        match &self.backing {
            Backing::Memfd(fd) => shm::send_fd(sock, fd.as_fd(), b"mman-channel"),
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                "send channel",
                "only a channel made in a memfd can be sent over a socket",
            )
            .with_hint("make it with `memfd()`, or share a named channel by its name")),
        }
    }

    /// Unlink the name if the object behind it is still this one (same inode): never remove
    /// an object someone else put there since.
    pub fn unlink_if_ours(&self) {
        if let Backing::Named(obj) = &self.backing {
            let bare = obj.name().trim_start_matches('/');
            let bare = bare.strip_prefix(shm::PREFIX).unwrap_or(bare);
            if let Ok(now) = SharedMemory::open(bare, 0) {
                if sys::same_file(now.as_fd(), obj.as_fd()) {
                    let _ = SharedMemory::unlink(bare);
                }
            }
        }
    }
}
