//! [`Subscriber`]: a subscribing end of a broadcast, and the [`Delivery`] it receives.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Geometry, EVER_PUB, HEAD, PUB_EVENT, PUB_OWNER, SPACE_EVENT};
use crate::channel::region::{Region, Slot};
use crate::channel::wait::{self, wake_all, Me, Waited, Waiting};
use crate::channel::Guarded;
use crate::error::{Error, ErrorKind, Result};

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

/// A subscribing end of a [`Broadcast`](super::Broadcast).
pub struct Subscriber {
    pub(super) region: Arc<Guarded>,
    pub(super) g: Geometry,
    pub(super) me: Me,
    /// The claim on the subscriber's place (its lock goes when the subscriber drops).
    pub(super) slot: Slot,
    pub(super) base: usize,
    pub(super) cursor: u64,
    pub(super) waited: bool,
    pub(super) missed: u64,
    pub(super) waiting: Waiting,
    /// When the publisher's process was last looked at (async and try receives).
    pub(super) last_look: Instant,
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
    /// runtime; see [`Receiver::recv_async`](crate::channel::Receiver::recv_async)).
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
        if let Err(e) = crate::channel::reactor::register(&self.region, PUB_EVENT, seq, cx.waker()) {
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }

    /// The sequence number of the next message this subscriber will get (unless
    /// overtaken).
    pub fn next_seq(&self) -> u64 {
        self.cursor
    }

    fn recv_how(&mut self, deadline: Option<Instant>, block: bool) -> Result<Option<Delivery>> {
        self.me.check("recv")?;
        let mut waiting = self.waiting;
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
                waiting,
                deadline,
                || region.word(at).load(Ordering::Acquire) != seen,
                |look| publisher_present(&region, cursor, look),
            )?;
            if let Waited::TimedOut = waited {
                return Ok(None);
            }
            waiting = waiting.retry();
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
                let mut data = Vec::new();
                self.region
                    .copy_out_append(at + 16, len.min(self.g.size), &mut data);
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
