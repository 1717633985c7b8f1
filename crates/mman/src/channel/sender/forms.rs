//! The other forms of a send: typed values, batches, sealed hand-offs, and the poll form
//! of an asynchronous send.

use super::*;

impl Sender {
    /// Send a plain value by copy (`bytemuck`): the receiver gets it with
    /// [`Receiver::recv_value`](crate::channel::Receiver::recv_value).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_value<T: bytemuck::NoUninit>(&mut self, value: &T) -> Result<()> {
        self.send(bytemuck::bytes_of(value))
    }

    /// Send any serde value, as JSON: the receiver gets it with
    /// [`Receiver::recv_serde`](crate::channel::Receiver::recv_serde). Feature `serde`.
    ///
    /// ```
    /// # fn main() -> mman::Result<()> {
    /// let chan = mman::channel::Channel::anonymous(64 * 1024)?;
    /// let (mut tx, mut rx) = (chan.sender()?, chan.receiver()?);
    /// tx.send_serde(&("frame", 7u32, vec![1.5f64, 2.5]))?;
    /// let (name, n, xs): (String, u32, Vec<f64>) = rx.recv_serde()?;
    /// assert_eq!((name.as_str(), n, xs), ("frame", 7, vec![1.5, 2.5]));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the value cannot be serialized (a map with
    /// non-string keys, a serializer's own error); else as [`send`](Self::send).
    #[cfg(feature = "serde")]
    pub fn send_serde<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "send",
                format!("the value cannot be serialized as JSON: {e}"),
            )
        })?;
        self.send(&bytes)
    }

    /// Send every message of `msgs`, waiting for room as needed, and wake a sleeping
    /// receiver once per batch instead of once per message: the way to move many small
    /// messages fast. Returns how many were sent (all, unless an error ends the batch: the
    /// messages before it were sent).
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
            match self.put(msg.as_ref(), KIND_BYTES, How::Block) {
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

    /// Send `msg`, waiting for room without blocking the thread: for async code (any
    /// runtime; see [`Receiver::recv_async`](crate::channel::Receiver::recv_async)).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[cfg(feature = "async")]
    pub async fn send_async(&mut self, msg: &[u8]) -> Result<()> {
        std::future::poll_fn(|cx| self.poll_send(cx, msg)).await
    }

    /// The poll form of [`send_async`](Self::send_async).
    ///
    /// # Errors
    /// As [`send`](Self::send).
    #[cfg(feature = "async")]
    pub fn poll_send(&mut self, cx: &mut std::task::Context<'_>, msg: &[u8]) -> std::task::Poll<Result<()>> {
        use std::task::Poll;
        loop {
            match self.send_how(msg, How::Try) {
                Ok(true) => return Poll::Ready(Ok(())),
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // A receiver that died never frees room: look at it at most every 50 ms (the
            // reactor re-polls at least that often).
            if self.last_look.elapsed() >= wait::SLICE {
                self.last_look = Instant::now();
                if let Err(e) = receiver_present(&self.region, "send", true) {
                    return Poll::Ready(Err(e));
                }
            }
            let seq = wait::arm(self.region.word(self.lane.event));
            match self.refresh(record_len(msg.len()) + 8) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(e) = crate::channel::reactor::register(&self.region, self.lane.event, seq, cx.waker())
            {
                return Poll::Ready(Err(e));
            }
            return Poll::Pending;
        }
    }

    /// Hand `memfd` to the receiver without copying its contents: it is sealed against
    /// writing, shrinking, growing and further seals (so nobody can change it again), kept
    /// open here until the receiver has taken it, and received as a
    /// [`Message::Sealed`](crate::channel::Message::Sealed), a read-only view whose bytes cannot
    /// change while it lives.
    ///
    /// The receiver opens the descriptor through `/proc/PID/fd`, which the kernel allows
    /// to processes of the same user (more exactly: those allowed to inspect this one).
    /// Sealing against writes makes the kernel check every page of the memfd for pins: a
    /// cost of a few nanoseconds per page, the only part that grows with the size. The
    /// memfd stays open here until the receiver has opened it; it is closed by the next
    /// `send_sealed`, [`flush`](Self::flush) or drop after that.
    ///
    /// # Errors
    /// As [`send`](Self::send); sealing fails while a writable shared mapping of the memfd
    /// exists (drop it first).
    pub fn send_sealed(&mut self, memfd: crate::shm::Memfd) -> Result<()> {
        self.me.check("send")?;
        // Close the memfds the receiver has taken since (it publishes its position as
        // soon as it has opened one): only those still in flight stay open here.
        if !self.inflight.is_empty() {
            self.refresh(0)?;
        }
        let rec = sealed::record(&memfd)?;
        self.put(&rec, KIND_SEALED, How::Block)?;
        self.inflight.push_back((self.head, memfd));
        self.publish();
        Ok(())
    }

    /// [`send_sealed`](Self::send_sealed), waiting at most `timeout` for room in the ring
    /// (zero: only if there is room now). Returns the memfd, unsent, when the time passed:
    /// for callers that wait in slices (to answer signals between them) and try again.
    ///
    /// # Errors
    /// As [`send_sealed`](Self::send_sealed).
    pub fn send_sealed_timeout(
        &mut self,
        memfd: crate::shm::Memfd,
        timeout: Duration,
    ) -> Result<Option<crate::shm::Memfd>> {
        self.me.check("send")?;
        if !self.inflight.is_empty() {
            self.refresh(0)?;
        }
        let rec = sealed::record(&memfd)?;
        if !self.put(&rec, KIND_SEALED, until(timeout))? {
            return Ok(Some(memfd));
        }
        self.inflight.push_back((self.head, memfd));
        self.publish();
        Ok(None)
    }
}
