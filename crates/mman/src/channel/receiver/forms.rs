//! The other forms of a receive: typed values, messages lent as views (a sealed hand-off
//! mapped, a batch), and the poll form of an asynchronous receive.

use super::*;

impl Receiver {
    /// Take a plain value sent with [`Sender::send_value`](crate::channel::Sender::send_value).
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`ErrorKind::InvalidInput`] when the message is not
    /// `size_of::<T>()` bytes (it is consumed all the same).
    pub fn recv_value<T: bytemuck::AnyBitPattern>(&mut self) -> Result<T> {
        let v = self.recv()?;
        bytemuck::try_pod_read_unaligned(&v).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                "recv",
                format!(
                    "a message of {} bytes is not a {}-byte value",
                    v.len(),
                    std::mem::size_of::<T>()
                ),
            )
        })
    }

    /// Take a value sent with [`Sender::send_serde`](crate::channel::Sender::send_serde) (JSON).
    /// Feature `serde`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), and [`ErrorKind::InvalidInput`] when the message is not
    /// the JSON of a `T` (it is consumed all the same: the next receive gets the next one).
    #[cfg(feature = "serde")]
    pub fn recv_serde<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        let v = self.recv()?;
        serde_json::from_slice(&v).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "recv",
                format!(
                    "a message of {} bytes is not the JSON of a {}: {e}",
                    v.len(),
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// Take the next message as it came: bytes, or a sealed memory view (zero-copy). A
    /// sealed hand-off of any size is taken ([`Options::max_sealed`](crate::channel::Options::max_sealed)
    /// bounds only the receives that copy): the view maps the memfd without allocating, and
    /// what it costs to read is the caller's choice.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); a sealed hand-off whose sender died before it was taken is
    /// [`ErrorKind::Disconnected`] (the message is dropped, the next one follows).
    pub fn recv_message(&mut self) -> Result<Message> {
        self.me.check("recv")?;
        let mut buf = Vec::new();
        let Some(i) = self.wait_ready(How::Block)? else {
            unreachable!("a blocking wait ends with a lane or an error")
        };
        Ok(match self.read_record(i, &mut buf, None)? {
            Got::Bytes => Message::Bytes(buf),
            Got::Sealed(m) => Message::Sealed(m),
        })
    }

    /// [`recv_message`](Self::recv_message), waiting at most `timeout` (zero: only if a
    /// message is there now); `None` when the time passed.
    ///
    /// # Errors
    /// As [`recv_message`](Self::recv_message).
    pub fn recv_message_timeout(&mut self, timeout: Duration) -> Result<Option<Message>> {
        self.recv_message_timeout_in(timeout, &mut Vec::new())
    }

    /// [`recv_message_timeout`](Self::recv_message_timeout) into `buf`'s allocation: a
    /// message of bytes is copied into `buf` (cleared first) and moved out of it into
    /// [`Message::Bytes`]. A caller that puts the vector back each time receives large
    /// messages without fresh pages (a new vector of 1 MiB is 256 page faults); `buf` is
    /// left as it was for a sealed view or a timeout.
    ///
    /// ```
    /// # fn main() -> mman::Result<()> {
    /// use std::time::Duration;
    /// use mman::channel::{Channel, Message};
    /// let chan = Channel::anonymous(4096)?;
    /// let (mut tx, mut rx) = (chan.sender()?, chan.receiver()?);
    /// let mut buf = Vec::new();
    /// for i in 0..3u8 {
    ///     tx.send(&[i; 100])?;
    ///     if let Some(Message::Bytes(v)) = rx.recv_message_timeout_in(Duration::from_secs(1), &mut buf)? {
    ///         assert_eq!(v, [i; 100]);
    ///         buf = v; // its allocation serves the next message
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_message`](Self::recv_message).
    pub fn recv_message_timeout_in(
        &mut self,
        timeout: Duration,
        buf: &mut Vec<u8>,
    ) -> Result<Option<Message>> {
        self.me.check("recv")?;
        let Some(i) = self.wait_ready(until(timeout))? else {
            return Ok(None);
        };
        buf.clear();
        Ok(Some(match self.read_record(i, buf, None)? {
            Got::Bytes => Message::Bytes(std::mem::take(buf)),
            Got::Sealed(m) => Message::Sealed(m),
        }))
    }

    /// Take every message there now (at least one, waiting for it), at most `max`,
    /// calling `f` with each (a copy in this process's memory). Returns how many were
    /// taken.
    ///
    /// # Errors
    /// As [`recv`](Self::recv); messages taken before an error were given to `f`.
    pub fn recv_batch(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        self.me.check("recv")?;
        if max == 0 {
            return Ok(0);
        }
        let mut buf = Vec::new();
        let Some(mut i) = self.wait_ready(How::Block)? else {
            unreachable!("a blocking wait ends with a lane or an error")
        };
        let mut n = 0;
        loop {
            if self.take_now(i, &mut buf) {
                f(&buf);
            } else {
                match self.read_record(i, &mut buf, None)? {
                    Got::Bytes => f(&buf),
                    Got::Sealed(m) => f(&m),
                }
            }
            n += 1;
            if n == max {
                break;
            }
            match self.ready_lane()? {
                Some(j) => i = j,
                None => break,
            }
        }
        Ok(n)
    }

    /// Take the next message, waiting without blocking the thread: for async code (any
    /// runtime). The wait costs no thread of its own: one reactor thread per process waits
    /// for all pending futures (see the module docs).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "async")]
    pub async fn recv_async(&mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        std::future::poll_fn(|cx| self.poll_recv(cx, &mut buf)).await?;
        Ok(buf)
    }

    /// The poll form of [`recv_async`](Self::recv_async), for hand-written futures and
    /// streams: `Ready(Ok(()))` with the message in `buf`, or `Pending` with `cx`'s waker
    /// registered.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[cfg(feature = "async")]
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &mut Vec<u8>,
    ) -> std::task::Poll<Result<()>> {
        use std::task::Poll;
        loop {
            match self.take(buf, How::Try) {
                Ok(true) => return Poll::Ready(Ok(())),
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let seq = wait::arm(self.region.word(RX_EVENT));
            match self.ready_lane() {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(e) = crate::channel::reactor::register(&self.region, RX_EVENT, seq, cx.waker()) {
                return Poll::Ready(Err(e));
            }
            return Poll::Pending;
        }
    }
}
