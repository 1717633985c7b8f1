//! [`Publisher`]: the publishing end of a broadcast (see the parent module for the slots
//! and their sequence words).

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Geometry, HEAD, JOINS, PUB_EVENT, SPACE_EVENT, WAIT_FOR_ME};
use crate::channel::region::Slot;
use crate::channel::wait::{self, wake_all, Me, Waited, Waiting};
use crate::channel::Guarded;
use crate::error::{Error, ErrorKind, Result};

/// The publishing end of a [`Broadcast`](super::Broadcast).
pub struct Publisher {
    pub(super) region: Arc<Guarded>,
    pub(super) g: Geometry,
    pub(super) me: Me,
    /// The claim on the publisher's slot (its lock goes when the publisher drops).
    pub(super) slot: Slot,
    /// The sequence number of the next message.
    pub(super) head: u64,
    /// The lowest cursor of the waited-for subscribers, as last computed.
    pub(super) floor: u64,
    /// The join count the floor was computed at.
    pub(super) joins: u64,
    pub(super) waiting: Waiting,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("next", &self.head).finish()
    }
}

impl Publisher {
    /// Publish `msg` to every subscriber; returns its sequence number. Waits only for
    /// subscribers joined with [`Broadcast::subscriber_waited_for`](super::Broadcast::subscriber_waited_for) that are a full ring
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
    pub(super) fn floor_now(&self, look: bool) -> u64 {
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
            self.waiting,
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
