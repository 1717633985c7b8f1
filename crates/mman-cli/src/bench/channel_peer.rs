//! `mman __channel-peer`: the other side of each measurement of `mman bench channel`.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use mman::channel::{Channel, Message, Options, Receiver, Sender};

/// `mman __channel-peer MODE NAME SIZE ROUNDS COUNT`: the other side of each measurement.
pub fn peer_main(mode: &str, name: &str, size: u64, rounds: u64, count: u64) -> Result<()> {
    let open = |dir: &str| -> Result<Channel> { Ok(Channel::open(&format!("{name}-{dir}"))?) };
    match mode {
        "mman" | "mman-futex" => {
            let mut o = Options::new();
            if mode == "mman-futex" {
                o.spin(Duration::ZERO);
            }
            let ping = o.open(&format!("{name}-ping"))?;
            let pong = o.open(&format!("{name}-pong"))?;
            let (mut rx, mut tx): (Receiver, Sender) = (ping.receiver()?, pong.sender()?);
            let mut buf = Vec::new();
            for _ in 0..rounds {
                rx.recv_into(&mut buf)?;
                tx.send(&buf)?;
            }
            if count > 0 {
                // Then the one-way stream: `count` messages, answered with their number.
                let mut n = 0u64;
                let mut bytes = 0u64;
                while n < count {
                    rx.recv_batch((count - n) as usize, |m| {
                        n += 1;
                        bytes += m.len() as u64;
                    })?;
                }
                if bytes != count * size {
                    bail!("{bytes} bytes in {n} messages of {size}");
                }
                tx.send(&n.to_le_bytes())?;
                tx.flush()?;
            }
        }
        "mman-in-place" => {
            let (mut rx, mut tx) = (open("ping")?.receiver()?, open("pong")?.sender()?);
            for _ in 0..rounds {
                // From one ring to the other, one copy, no buffer between.
                // SAFETY: both channels are this benchmark's own (mode 0600, names only it
                // knows), used by it and this peer, which follow the protocol.
                unsafe { rx.recv_in_place(|m| tx.send_in_place(m.len(), |out| out.copy_from_slice(m))) }??;
            }
        }
        "sealed" => {
            let (mut rx, mut tx) = (open("ping")?.receiver()?, open("pong")?.sender()?);
            loop {
                match rx.recv_message() {
                    Ok(Message::Sealed(view)) => {
                        if view.get(..5) != Some(b"frame".as_slice()) {
                            bail!("a sealed frame without its mark");
                        }
                        tx.send(b"k")?;
                    }
                    Ok(Message::Bytes(_)) => bail!("bytes where a sealed frame was expected"),
                    Err(e) if e.kind() == mman::ErrorKind::Disconnected => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "idle" => {
            let mut rx = Channel::open(name)?.receiver()?;
            rx.recv()?;
        }
        "stream" => {
            let (mut i, mut o) = (std::io::stdin().lock(), std::io::stdout().lock());
            let mut buf = vec![0u8; size as usize];
            for _ in 0..rounds {
                i.read_exact(&mut buf)?;
                o.write_all(&buf)?;
                o.flush()?;
            }
            let mut total = 0u64;
            let mut chunk = vec![0u8; 1 << 20];
            while total < count * size {
                match i.read(&mut chunk)? {
                    0 => bail!("the stream ended after {total} bytes"),
                    n => total += n as u64,
                }
            }
            o.write_all(&total.to_le_bytes())?;
            o.flush()?;
        }
        m if m.starts_with("pool") => super::channel::pool_peer_main(m, name, size, rounds, count)?,
        other => bail!("unknown channel peer {other:?}"),
    }
    Ok(())
}
