//! [`Borrowed`]: a received message held where it lies, a slot of the pool, until dropped.

use super::super::region::Region;
use super::super::Receiver;
use crate::error::Result;

/// A message taken with [`Receiver::recv_borrowed`]: a slot of the channel's pool, held by
/// the receiver (and given back to the pool when this is dropped), or, for a message that
/// came through the ring, a copy in this process's memory.
///
/// Reads are copies (`read_at`, `Read`: the cursor starts at 0), touching only the bytes
/// asked for; [`as_slice`](Borrowed::as_slice) reads in place, for callers who vouch for
/// the channel's peers.
pub struct Borrowed<'a> {
    inner: Inner<'a>,
    at: usize,
}

enum Inner<'a> {
    Slot {
        rx: &'a mut Receiver,
        slot: usize,
        len: usize,
        held: u64,
        done: bool,
    },
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Borrowed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Borrowed")
            .field("pooled", &self.is_pooled())
            .field("len", &self.len())
            .finish()
    }
}

impl Receiver {
    /// Take the next message and hold it where it lies, if it came through the pool: no
    /// copy until asked for ([`Borrowed::read_at`], `Read`, [`Borrowed::to_vec`]). The slot
    /// goes back to the pool when the [`Borrowed`] is dropped. A message that came through
    /// the ring is copied out, as [`recv`](Self::recv) does. Waits as `recv` does.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted) for a
    /// pool record naming a slot its sender does not hold.
    pub fn recv_borrowed(&mut self) -> Result<Borrowed<'_>> {
        let mut buf = Vec::new();
        Ok(match self.take_slot(&mut buf)? {
            Some((slot, len, held)) => Borrowed {
                inner: Inner::Slot {
                    rx: self,
                    slot,
                    len,
                    held,
                    done: false,
                },
                at: 0,
            },
            None => Borrowed {
                inner: Inner::Bytes(buf),
                at: 0,
            },
        })
    }
}

impl Borrowed<'_> {
    /// The message's length.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Slot { len, .. } => *len,
            Inner::Bytes(v) => v.len(),
        }
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the message is held in a slot of the pool (else it is a copy).
    pub fn is_pooled(&self) -> bool {
        matches!(self.inner, Inner::Slot { .. })
    }

    /// Copy bytes from `offset` into `dst`, as many as there are (`dst.len()` at most);
    /// how many. Only those bytes are read.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len().saturating_sub(offset));
        match &self.inner {
            Inner::Slot { rx, slot, .. } => {
                let at = rx.layout.pool.data(*slot) + offset;
                rx.region.copy_out(at, &mut dst[..n]);
            }
            Inner::Bytes(v) => dst[..n].copy_from_slice(&v[offset..offset + n]),
        }
        n
    }

    /// The whole message, copied into a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.read_at(0, &mut v);
        v
    }

    /// The message's bytes as a plain slice, read in place.
    ///
    /// # Safety
    /// The slice points into the channel's shared memory: nothing may write those bytes
    /// while it lives. mman's sender leaves a slot alone from the moment it is sent until
    /// the receiver gives it back, as long as everything written into the channel's memory
    /// was written by mman's endpoints: a forged record or slot state, even one written
    /// before the call, can make a sender loan this slot and write it meanwhile. The caller
    /// vouches for every other party that can reach the memory (other processes, other
    /// mappings of it in this process): none writes it, other than through mman's
    /// endpoints, while the slice lives. (`read_at` and `to_vec` copy, and need no such
    /// promise.)
    pub unsafe fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Slot { rx, slot, len, .. } => {
                // SAFETY: the slot is held by this receiver until `self` drops (its state
                // names it); no other party writes it (the caller's contract).
                unsafe { rx.region.bytes(rx.layout.pool.data(*slot), *len) }
            }
            Inner::Bytes(v) => v,
        }
    }

    /// Give the slot back now, reporting whether it was still this receiver's.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted) when the slot's state no
    /// longer named this receiver: another party took it while it was held, and what was
    /// read from it may be anything.
    pub fn finish(mut self) -> Result<()> {
        self.give_back()
    }

    fn give_back(&mut self) -> Result<()> {
        if let Inner::Slot {
            rx, slot, held, done, ..
        } = &mut self.inner
        {
            if !*done {
                *done = true;
                if !rx.layout.pool.give_back(&rx.region, *slot, *held) {
                    return Err(super::super::lanes::corrupted(
                        "recv",
                        format!("pool slot {slot} was taken from the receiver while it held it"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The region, byte offset and length of a pooled message.
    pub(super) fn slot_parts(&self) -> Option<(&Region, usize, usize)> {
        match &self.inner {
            Inner::Slot { rx, slot, len, .. } => Some((&rx.region, rx.layout.pool.data(*slot), *len)),
            Inner::Bytes(_) => None,
        }
    }

    /// The bytes of a copied message.
    pub(super) fn bytes(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Bytes(v) => Some(v),
            Inner::Slot { .. } => None,
        }
    }
}

impl std::io::Read for Borrowed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.read_at(self.at, buf);
        self.at += n;
        Ok(n)
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        let _ = self.give_back();
    }
}
