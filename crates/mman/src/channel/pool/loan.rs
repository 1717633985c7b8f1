//! [`Loan`]: a slot of the pool loaned to a sender, and the sender's calls that loan one.

use std::time::Duration;

use super::super::lanes::{disconnected, receiver_present, until, How, KIND_POOL};
use super::super::wait::{self, Waited};
use super::super::Sender;
use super::Borrowed;
use crate::error::{Error, ErrorKind, Result};

/// A slot of the channel's pool loaned to a [`Sender`]: fill it, then
/// [`send`](Loan::send) it (only its index and length pass through the ring). Dropped
/// unsent, it goes back to the pool.
///
/// Writes are copies (`write_at`, `Write`: the cursor starts at 0); the bytes not written
/// hold whatever the slot held before. [`as_mut_slice`](Loan::as_mut_slice) writes in
/// place, for callers who vouch for the channel's peers.
pub struct Loan<'a> {
    tx: &'a mut Sender,
    slot: usize,
    len: usize,
    held: u64,
    at: usize,
    done: bool,
}

impl std::fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan")
            .field("slot", &self.slot)
            .field("len", &self.len)
            .finish()
    }
}

impl Sender {
    /// Loan a slot of the channel's pool for a message of `len` bytes, waiting for one to
    /// be free as long as it takes (a slot held by a party that died comes back within
    /// 100 ms).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the channel has no pool or `len` exceeds its slot
    /// size; [`ErrorKind::Disconnected`] once the receiver is gone;
    /// [`ErrorKind::Corrupted`] for garbage in the pool.
    pub fn loan(&mut self, len: usize) -> Result<Loan<'_>> {
        match self.loan_how(len, How::Block)? {
            Some(l) => Ok(l),
            None => unreachable!("a blocking wait for a slot ends with one or an error"),
        }
    }

    /// Loan a slot if one is free now.
    ///
    /// # Errors
    /// As [`loan`](Self::loan).
    pub fn try_loan(&mut self, len: usize) -> Result<Option<Loan<'_>>> {
        self.loan_how(len, How::Try)
    }

    /// Loan a slot, waiting at most `timeout` for one.
    ///
    /// # Errors
    /// As [`loan`](Self::loan).
    pub fn loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<Option<Loan<'_>>> {
        self.loan_how(len, until(timeout))
    }

    fn loan_how(&mut self, len: usize, how: How) -> Result<Option<Loan<'_>>> {
        self.me.check("loan")?;
        let pool = self.layout.pool;
        if !pool.exists() || len > pool.shape.slot_size {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "loan",
                format!(
                    "a slot for {len} bytes: the channel's pool has {} slots of {} bytes",
                    pool.shape.slots, pool.shape.slot_size
                ),
            )
            .with_hint("make the channel with a pool of larger slots (Options::pool)"));
        }
        if self.receiver_left() {
            return Err(disconnected("loan", "receiver"));
        }
        let (lane, tag) = (self.index, self.tag);
        loop {
            if let Some((slot, held)) = pool.try_loan(&self.region, lane, tag) {
                if !self.backed[slot] {
                    // A slot's pages are taken from /dev/shm when it is first loaned: a
                    // channel costs its ring, and the slots a conversation uses.
                    if let Err(e) = self.region.back(pool.data(slot), pool.shape.slot_size) {
                        pool.give_back(&self.region, slot, held);
                        return Err(e);
                    }
                    self.backed[slot] = true;
                }
                return Ok(Some(Loan {
                    tx: self,
                    slot,
                    len,
                    held,
                    at: 0,
                    done: false,
                }));
            }
            let (freed, garbage) = pool.reclaim(&self.region, &self.layout, false);
            if freed > 0 {
                continue;
            }
            if garbage {
                return Err(super::super::lanes::corrupted(
                    "loan",
                    "a pool slot's state word holds garbage".into(),
                ));
            }
            if let How::Try = how {
                return Ok(None);
            }
            let (region, layout) = (&self.region, &self.layout);
            let waited = wait::wait_for(
                region.word(pool.event()),
                self.waiting,
                how.deadline(),
                || pool.any_free(region),
                |look| {
                    if look {
                        pool.reclaim(region, layout, true);
                    }
                    receiver_present(region, "loan", look)
                },
            )?;
            if let Waited::TimedOut = waited {
                return Ok(None);
            }
        }
    }

    /// Send `msg` through a slot of the pool (`send`'s route from the threshold up).
    pub(in crate::channel) fn put_pooled(&mut self, msg: &[u8], how: How) -> Result<bool> {
        let Some(mut loan) = self.loan_how(msg.len(), how)? else {
            return Ok(false);
        };
        loan.write_at(0, msg)?;
        loan.send_how(how)
    }

    /// `send_in_place` of a message that goes through the pool.
    ///
    /// # Safety
    /// As [`Loan::as_mut_slice`].
    pub(in crate::channel) unsafe fn send_in_place_pooled(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let mut loan = self.loan(len)?;
        // SAFETY: the caller's contract.
        fill(unsafe { loan.as_mut_slice() });
        loan.send()
    }
}

impl Loan<'_> {
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Which slot of the pool this is.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Copy `src` into the message at byte `offset`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when it would pass the message's end (nothing written).
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        if offset > self.len || src.len() > self.len - offset {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "write loan",
                format!(
                    "{} bytes at {offset} pass the end of a {}-byte message",
                    src.len(),
                    self.len
                ),
            ));
        }
        let at = self.tx.layout.pool.data(self.slot) + offset;
        self.tx.region.copy_in(at, src);
        Ok(())
    }

    /// Copy the whole of a received message (a slot of another channel's pool, or bytes)
    /// into this one from its start, word by word: the way to forward one.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `src` is longer than this message.
    pub fn copy_from(&mut self, src: &Borrowed<'_>) -> Result<()> {
        match src.slot_parts() {
            Some((region, offset, len)) if len <= self.len => {
                let at = self.tx.layout.pool.data(self.slot);
                self.tx.region.copy_words_from(at, region, offset, len);
                Ok(())
            }
            Some((_, _, len)) => self.write_at(0, &vec![0; len]),
            None => self.write_at(0, src.bytes().unwrap_or(&[])),
        }
    }

    /// The message's bytes as a plain slice, to write in place (their contents are what
    /// the slot held before).
    ///
    /// # Safety
    /// The slice points into the channel's shared memory: nothing else may access those
    /// bytes while it lives. mman's endpoints leave a loaned slot alone, as long as
    /// everything written into the channel's memory was written by mman's endpoints: a
    /// forged record or slot state, even one written before the call, can make the receiver
    /// read the slot meanwhile. The caller vouches for every other party that can reach the
    /// memory (the processes of a channel inherited by fork, a named object's owner, those
    /// handed the memfd, other mappings of it in this process): none writes it, other than
    /// through mman's endpoints, while the slice lives, and none reads these bytes
    /// meanwhile.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        let at = self.tx.layout.pool.data(self.slot);
        // SAFETY: the slot is ours (its state names this sender) until it is sent; no other
        // party touches it meanwhile (the caller's contract).
        unsafe { self.tx.region.bytes_mut(at, self.len) }
    }

    /// Send the message: the slot goes to the receiver, its index and length through the
    /// ring (waiting for room there as [`Sender::send`] does).
    ///
    /// # Errors
    /// As [`Sender::send`]; [`ErrorKind::Corrupted`] when the slot's state no longer
    /// names this sender (another party wrote it).
    pub fn send(mut self) -> Result<()> {
        self.send_how(How::Block).map(|_| ())
    }

    fn send_how(&mut self, how: How) -> Result<bool> {
        let pool = self.tx.layout.pool;
        if !pool.holds(&self.tx.region, self.slot, self.held) {
            self.done = true; // not ours any more: never give it back
            return Err(super::super::lanes::corrupted(
                "send",
                format!("pool slot {} was taken from its sender", self.slot),
            ));
        }
        let rec = super::record(self.slot, self.len, self.held);
        let sent = self.tx.put(&rec, KIND_POOL, how)?;
        if sent {
            self.done = true;
            self.tx.publish();
        }
        Ok(sent)
    }
}

impl std::io::Write for Loan<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.len - self.at);
        self.write_at(self.at, &buf[..n]).map_err(std::io::Error::other)?;
        self.at += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.tx
                .layout
                .pool
                .give_back(&self.tx.region, self.slot, self.held);
        }
    }
}
