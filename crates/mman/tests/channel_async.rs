//! Async sends and receives under tokio: many channels awaited by one runtime thread (the
//! waiting costs no thread per channel), a peer in another process, a peer killed while
//! a future waits, and a sender waiting for room.

mod common;

use std::time::{Duration, Instant};

use mman::channel::broadcast::Broadcast;
use mman::channel::{Channel, Options};
use mman::ErrorKind;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn one_runtime_thread_awaits_sixteen_channels() {
    let chans: Vec<Channel> = (0..16).map(|_| Channel::anonymous(4096).unwrap()).collect();
    let mut rxs: Vec<_> = chans.iter().map(|c| c.receiver().unwrap()).collect();
    let senders: Vec<_> = chans
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut tx = c.sender().unwrap();
            std::thread::spawn(move || {
                // Each sender speaks up at its own time, while every receiver waits.
                std::thread::sleep(Duration::from_millis(20 + 10 * i as u64));
                for k in 0..100u32 {
                    tx.send_value(&(i as u32 * 1000 + k)).unwrap();
                }
            })
        })
        .collect();
    let got = runtime().block_on(async {
        let futures = rxs.iter_mut().map(|rx| async move {
            let mut v = Vec::new();
            for _ in 0..100 {
                let m = rx.recv_async().await.unwrap();
                v.push(u32::from_le_bytes(m[..4].try_into().unwrap()));
            }
            // The sender thread ended: its endpoint dropped.
            let e = rx.recv_async().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Disconnected);
            v
        });
        futures_join(futures.collect()).await
    });
    for (i, v) in got.iter().enumerate() {
        let want: Vec<u32> = (0..100).map(|k| i as u32 * 1000 + k).collect();
        assert_eq!(v, &want, "channel {i}");
    }
    for s in senders {
        s.join().unwrap();
    }
}

/// A minimal join of futures of one type (no extra dependency): polls them all in turn.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

const PEER: &str = "a_peer_process_sends_and_dies_while_a_future_waits";

#[test]
fn a_peer_process_sends_and_dies_while_a_future_waits() {
    if common::is("sender") {
        let chan = Channel::open(&std::env::var("MMAN_TEST_CHANNEL").unwrap()).unwrap();
        let mut tx = chan.sender().unwrap();
        for i in 0..10_000u64 {
            tx.send_value(&i).unwrap();
        }
        // Then hang until killed, attached.
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    if common::role().is_some() {
        return;
    }
    let name = format!("test-{}-async", std::process::id());
    let chan = Channel::create(&name, 1 << 16).unwrap();
    let mut rx = chan.receiver().unwrap();
    let mut child = common::rerun(PEER, "sender")
        .env("MMAN_TEST_CHANNEL", &name)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        for i in 0..10_000u64 {
            let m = rx.recv_async().await.unwrap();
            assert_eq!(m, i.to_le_bytes());
        }
    });
    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    let e = rt.block_on(async { rx.recv_async().await.unwrap_err() });
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn an_async_sender_waits_for_room_and_subscribers_await_frames() {
    let chan = Options::new().capacity(256).anonymous().unwrap();
    let mut tx = chan.sender().unwrap();
    let mut rx = chan.receiver().unwrap();
    let drain = std::thread::spawn(move || {
        let mut n = 0u32;
        while let Ok(m) = rx.recv() {
            assert_eq!(m, n.to_le_bytes());
            n += 1;
        }
        n
    });
    runtime().block_on(async {
        for i in 0..5000u32 {
            tx.send_async(&i.to_le_bytes()).await.unwrap();
        }
    });
    drop(tx);
    assert_eq!(drain.join().unwrap(), 5000);

    let bus = Broadcast::anonymous(64, 8).unwrap();
    let mut sub = bus.subscriber().unwrap();
    let mut publisher = bus.publisher().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..50u64 {
            std::thread::sleep(Duration::from_millis(1));
            publisher.publish_value(&i).unwrap();
        }
    });
    runtime().block_on(async {
        for i in 0..50u64 {
            let d = sub.recv_async().await.unwrap();
            assert_eq!((d.seq, d.missed, d.data), (i, 0, i.to_le_bytes().to_vec()));
        }
        // The publisher is dropped when the feeder ends.
        assert_eq!(
            sub.recv_async().await.unwrap_err().kind(),
            ErrorKind::Disconnected
        );
    });
    feeder.join().unwrap();
}
