//! Sealed hand-offs: the record a [`Sender::send_sealed`](super::Sender::send_sealed) puts in
//! its lane, and how the receiver turns it back into a sealed view. Both ends of the format
//! live here, so they cannot drift apart.
//!
//! The record names the sender's descriptor (`/proc/PID/fd/FD`) and what the receiver must
//! find there (device, inode, length). Everything in it is memory a peer can write, so the
//! receiver trusts none of it: the process must be the lane's live owner and belong to the
//! channel's owner, and the file must be that memfd, sealed against writes and shrinking.
//!
//! Its size is the sender's choice, and a memfd can be sparse (a terabyte of holes costs
//! the sender nothing): the receives that copy the message into this process refuse one
//! larger than the receiver's limit from the record's length, before anything is opened or
//! mapped; the file found must then have exactly that length. The sealed view
//! (`recv_message`) is not limited: it maps without allocating, and the caller decides how
//! much of it to read.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;

use super::lanes::{corrupted, disconnected};
use super::region::Region;
use super::wait;
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Memfd, SealedMap, Seals};

/// The payload of a sealed record: `pid | fd << 32`, dev, ino, len (little-endian words).
pub(super) const SEALED_LEN: usize = 32;

/// Seal `memfd` for good (writes, shrinking, growing, further seals) and describe it.
pub(super) fn record(memfd: &Memfd) -> Result<[u8; SEALED_LEN]> {
    let want = Seals::WRITE | Seals::SHRINK | Seals::GROW | Seals::SEAL;
    if !memfd.seals()?.contains(want) {
        memfd.add_seals(want)?;
    }
    let info = crate::sys::file_info(memfd.as_fd()).map_err(|e| Error::os("fstat", e))?;
    let pid = crate::sys::shm::pid() as u64;
    let fd = memfd.as_fd().as_raw_fd() as u64;
    let mut rec = [0u8; SEALED_LEN];
    for (i, w) in [pid | fd << 32, info.dev, info.ino, info.size].iter().enumerate() {
        rec[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    Ok(rec)
}

/// Open the memfd that record `rec`, taken from lane `lane` (for messages) whose owner word
/// is `owner`, describes, and map it sealed; one larger than `max` bytes (when given) is
/// refused before anything is opened (the file must then be the size the record says).
pub(super) fn open(
    region: &Region,
    lane: usize,
    owner: usize,
    rec: &[u8],
    max: Option<usize>,
) -> Result<SealedMap> {
    if rec.len() != SEALED_LEN {
        return Err(corrupted(
            "recv",
            format!("lane {lane}: a sealed hand-off record of {} bytes", rec.len()),
        ));
    }
    let w = |k: usize| u64::from_le_bytes(rec[k * 8..k * 8 + 8].try_into().expect("8 bytes"));
    let (pid, fd, dev, ino, len) = (w(0) as u32, (w(0) >> 32) as u32, w(1), w(2), w(3));
    if let Some(max) = max.filter(|&m| len > m as u64) {
        return Err(Error::new(
            ErrorKind::ResourceLimit,
            "recv",
            format!("lane {lane}: a sealed hand-off of {len} bytes, more than this receiver copies ({max} bytes); it was dropped unread"),
        )
        .with_hint("raise the limit with channel::Options::max_sealed, or take such messages with recv_message (a sealed view, no copy)"));
    }
    // The record names the lane's owner, whose lock says it lives (a record alone
    // cannot make us open some other process's files)...
    let owner_word = region.word(owner).load(Ordering::Acquire);
    if owner_word == 0 || wait::pid_of(owner_word) != pid || !region.occupied(owner) {
        return Err(disconnected("recv", "sender of a sealed hand-off")
            .with_hint("the sender left before the receiver took its memfd; the message is lost"));
    }
    // ...and since the owner word is memory a peer can write, the process must also
    // belong to the user who owns the channel's memory: whoever can write the region
    // could read that user's processes anyway, and no one else's are ever opened.
    let theirs = crate::sys::shm::process_uid(pid);
    if theirs.is_none() || theirs != region.owner_uid() {
        return Err(corrupted(
            "recv",
            format!("lane {lane}: a sealed hand-off from process {pid}, which does not belong to the channel's owner"),
        ));
    }
    let file = crate::sys::shm::open_peer_fd(pid, fd).map_err(|e| {
        let kind = e.kind();
        let err = Error::os("open", e).with_path(Some(format!("/proc/{pid}/fd/{fd}").as_ref()));
        if kind == std::io::ErrorKind::NotFound {
            err.with_kind(ErrorKind::Disconnected)
                .with_hint("the sender closed the memfd or died before it was taken")
        } else {
            err.with_hint("the receiver must be allowed to inspect the sender's process (the same user)")
        }
    })?;
    let info = crate::sys::file_info(file.as_fd()).map_err(|e| Error::os("fstat", e))?;
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
