//! Channels between real processes: this test binary re-runs itself as the peer (see
//! `common`), the peer opens the named channel the test made, and both sides check what
//! they see. Adversarial cases: peers killed at random instants, garbage written over the
//! shared region, hand-offs of memfds that are not sealed. Over 600 lines because each
//! case is a whole scenario of two or more processes; the hostile review's cases are in
//! `channel_audit.rs`.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mman::channel::broadcast::{self, Broadcast};
use mman::channel::{self, Channel, Message, Options};
use mman::ErrorKind;

fn unique(tag: &str) -> String {
    format!("test-{}-{tag}", std::process::id())
}

fn object_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/mman.{name}")).exists()
}

/// The payload of message `i`: 1 to 300 bytes, its number then a fill byte derived from
/// it, so order and content are both checked. Built and compared with whole-slice copies
/// (memcpy, memcmp), fast even in an unoptimised test build.
fn payload(i: u64, buf: &mut Vec<u8>) {
    let (len, k) = shape(i);
    buf.clear();
    buf.extend_from_slice(&i.to_le_bytes()[..k]);
    buf.extend_from_slice(&FILL[(i % 251) as usize][..len - k]);
}

fn is_payload(i: u64, m: &[u8]) -> bool {
    let (len, k) = shape(i);
    m.len() == len && m[..k] == i.to_le_bytes()[..k] && m[k..] == FILL[(i % 251) as usize][..len - k]
}

fn shape(i: u64) -> (usize, usize) {
    let len = 1 + (i.wrapping_mul(2654435761) % 300) as usize;
    (len, len.min(8))
}

static FILL: std::sync::LazyLock<Vec<[u8; 300]>> =
    std::sync::LazyLock::new(|| (0..251u32).map(|b| [b as u8 ^ 0x5a; 300]).collect());

fn spawn(test: &str, role: &str, name: &str, extra: &[(&str, String)]) -> Child {
    let mut c = common::rerun(test, role);
    c.env("MMAN_TEST_CHANNEL", name).stdout(Stdio::null());
    for (k, v) in extra {
        c.env(k, v);
    }
    c.spawn().expect("spawn the peer")
}

fn env_name() -> String {
    std::env::var("MMAN_TEST_CHANNEL").expect("the channel's name")
}

fn env_u64(key: &str) -> u64 {
    std::env::var(key).expect(key).parse().expect("a number")
}

// ---------------------------------------------------------------------------------------

const ORDER: &str = "ten_million_messages_arrive_in_order_across_processes";

/// 10 M messages of 1 to 300 bytes from another process, in batches: every one arrives,
/// in order, intact; then the sender's departure is `Disconnected`, and the name is gone
/// once both ends are.
#[test]
fn ten_million_messages_arrive_in_order_across_processes() {
    const N: u64 = 10_000_000;
    if common::is("sender") {
        let chan = Channel::open(&env_name()).unwrap();
        let mut tx = chan.sender().unwrap();
        let n = env_u64("MMAN_TEST_N");
        let mut msgs: Vec<Vec<u8>> = vec![Vec::new(); 256];
        let mut i = 0;
        while i < n {
            let k = (n - i).min(256);
            for (j, m) in msgs.iter_mut().take(k as usize).enumerate() {
                payload(i + j as u64, m);
            }
            assert_eq!(tx.send_batch(&msgs[..k as usize]).unwrap(), k as usize);
            i += k;
        }
        return;
    }
    if common::role().is_some() {
        return;
    }
    let name = unique("order");
    let chan = channel::Options::new().capacity(1 << 20).create(&name).unwrap();
    let mut rx = chan.receiver().unwrap();
    let mut child = spawn(ORDER, "sender", &name, &[("MMAN_TEST_N", N.to_string())]);
    let mut next = 0u64;
    let mut bad = None;
    loop {
        match rx.recv_batch(4096, |m| {
            if bad.is_none() && !is_payload(next, m) {
                bad = Some(next);
            }
            next += 1;
        }) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
                break;
            }
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(bad, None, "message {bad:?} differs");
    assert_eq!(next, N);
    drop(rx);
    drop(chan);
    assert!(!object_exists(&name), "the last endpoint removes the name");
}

const MPSC: &str = "many_senders_each_in_order";

/// Four sender processes at once: every message of each arrives, each sender's in order.
#[test]
fn many_senders_each_in_order() {
    if common::is("sender") {
        let chan = Channel::open(&env_name()).unwrap();
        let mut tx = chan.sender().unwrap();
        let me = env_u64("MMAN_TEST_ID");
        for i in 0..env_u64("MMAN_TEST_N") {
            tx.send(&[me.to_le_bytes(), i.to_le_bytes()].concat()).unwrap();
        }
        return;
    }
    if common::role().is_some() {
        return;
    }
    const N: u64 = 200_000;
    let name = unique("mpsc");
    let chan = Options::new().senders(4).capacity(4096).create(&name).unwrap();
    let mut rx = chan.receiver().unwrap();
    let mut kids: Vec<Child> = (0..4)
        .map(|id| {
            spawn(
                MPSC,
                "sender",
                &name,
                &[("MMAN_TEST_N", N.to_string()), ("MMAN_TEST_ID", id.to_string())],
            )
        })
        .collect();
    let mut next = [0u64; 4];
    // Senders attach at different times: wait for the first, then run until all left.
    loop {
        match rx.recv() {
            Ok(m) => {
                let id = u64::from_le_bytes(m[..8].try_into().unwrap()) as usize;
                let i = u64::from_le_bytes(m[8..16].try_into().unwrap());
                assert_eq!(i, next[id], "sender {id}");
                next[id] += 1;
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
                if next.iter().all(|&n| n == N) {
                    break;
                }
                // Disconnected between one sender leaving and another attaching: wait.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    for k in &mut kids {
        assert!(k.wait().unwrap().success());
    }
    assert_eq!(next, [N; 4]);
}

// ---------------------------------------------------------------------------------------

const KILL: &str = "a_peer_killed_at_any_instant_is_noticed";

/// SIGKILL of the sender (mid-send) and of the receiver (mid-receive), 50 times each at
/// random instants: the other side gets `Disconnected`, promptly, never hangs; no object
/// is left behind.
#[test]
fn a_peer_killed_at_any_instant_is_noticed() {
    if common::is("sender") {
        let chan = Channel::open(&env_name()).unwrap();
        let mut tx = chan.sender().unwrap();
        let mut buf = Vec::new();
        for i in 0.. {
            payload(i, &mut buf);
            tx.send(&buf).unwrap();
        }
        return;
    }
    if common::is("receiver") {
        let chan = Channel::open(&env_name()).unwrap();
        let mut rx = chan.receiver().unwrap();
        loop {
            rx.recv().unwrap();
        }
    }
    if common::role().is_some() {
        return;
    }
    let mut slowest = Duration::ZERO;
    for round in 0..100u64 {
        let kill_sender = round % 2 == 0;
        let name = unique(&format!("kill{round}"));
        let chan = Options::new().capacity(4096).create(&name).unwrap();
        let mut child = spawn(KILL, if kill_sender { "sender" } else { "receiver" }, &name, &[]);
        // A pseudo-random instant: 0 to 20 ms after the peer started.
        let delay = Duration::from_micros((round * 7919) % 20_000);
        let noticed = if kill_sender {
            let mut rx = chan.receiver().unwrap();
            // Wait for the first message (the sender is attached and sending).
            let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            assert!(first.is_some(), "round {round}: the sender never sent");
            std::thread::sleep(delay);
            child.kill().unwrap();
            let killed = Instant::now();
            child.wait().unwrap();
            let e = loop {
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("round {round}: no Disconnected within 10 s"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.kind(), ErrorKind::Disconnected, "round {round}: {e}");
            killed.elapsed()
        } else {
            let mut tx = chan.sender().unwrap();
            // The ring (4 KiB) fills unless the receiver takes: it is attached once a
            // send goes through after a full ring.
            let started = Instant::now();
            while started.elapsed() < delay {
                match tx.send_timeout(&[7u8; 100], Duration::from_secs(20)) {
                    Ok(true) => {}
                    Ok(false) => panic!("round {round}: the receiver never received"),
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            child.kill().unwrap();
            let killed = Instant::now();
            child.wait().unwrap();
            let e = loop {
                match tx.send_timeout(&[7u8; 100], Duration::from_secs(10)) {
                    Ok(true) => continue,
                    Ok(false) => panic!("round {round}: no Disconnected within 10 s"),
                    Err(e) => break e,
                }
            };
            assert_eq!(e.kind(), ErrorKind::Disconnected, "round {round}: {e}");
            killed.elapsed()
        };
        slowest = slowest.max(noticed);
        drop(chan);
        assert!(!object_exists(&name), "round {round}: the object was left behind");
    }
    // The promise is 100 ms; a loaded CI machine gets slack, a hang does not.
    assert!(slowest < Duration::from_secs(2), "slowest notice {slowest:?}");
    eprintln!("slowest notice of a killed peer: {slowest:?}");
}

// ---------------------------------------------------------------------------------------

/// A peer scribbling random bytes over the whole region while both ends work: operations
/// may fail (`Corrupted`, `Disconnected`) but never crash, hang, or touch memory outside.
#[test]
fn garbage_in_the_region_fails_operations_never_crashes() {
    let name = unique("garbage");
    let chan = Options::new().capacity(4096).senders(2).create(&name).unwrap();
    let obj = mman::shm::SharedMemory::open(&name, 0).unwrap();
    let raw = obj.map().unwrap();
    let len = raw.len();
    // Most of the region is the pool's slots (payload, which any bytes may fill): seven
    // scribbles in eight go to the rest (the configuration, lanes, rings and the pool's
    // state words), where garbage must be noticed, so that even under valgrind some of it
    // is; the eighth goes anywhere.
    let (slots, slot_size) = chan.pool();
    let control = len - slots * slot_size;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0x9e3779b97f4a7c15u64;
            let mut junk = [0u8; 64];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                for b in junk.iter_mut() {
                    *b = (x >> (*b as u64 % 56)) as u8 ^ x as u8;
                }
                let at = (x as usize) % if x.is_multiple_of(8) { len } else { control };
                let n = junk.len().min(len - at);
                raw.write_at(at, &junk[..n]).unwrap();
                // Let the other thread run (valgrind runs one thread at a time).
                std::thread::yield_now();
            }
        });
        let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
        let started = Instant::now();
        // Two seconds, and on until garbage was noticed at least once (a slow machine,
        // valgrind), within a minute.
        let noticed = |o: &std::collections::BTreeMap<String, u32>| o.contains_key("Corrupted");
        while (started.elapsed() < Duration::from_secs(2) || !noticed(&outcomes))
            && started.elapsed() < Duration::from_secs(60)
        {
            let mut note = |r: Result<String, mman::Error>| {
                let k = match r {
                    Ok(s) => s,
                    Err(e) => format!("{:?}", e.kind()),
                };
                *outcomes.entry(k).or_default() += 1;
            };
            match chan.sender() {
                Ok(mut tx) => {
                    note(
                        tx.send_timeout(b"hello", Duration::from_millis(20))
                            .map(|b| format!("sent {b}")),
                    );
                }
                Err(e) => note(Err(e)),
            }
            match chan.receiver() {
                Ok(mut rx) => {
                    note(
                        rx.recv_timeout(Duration::from_millis(20))
                            .map(|m| format!("got {}", m.is_some())),
                    );
                    note(rx.try_recv().map(|m| format!("try {}", m.is_some())));
                }
                Err(e) => note(Err(e)),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("outcomes under garbage: {outcomes:?}");
        assert!(
            outcomes.keys().any(|k| k == "Corrupted"),
            "garbage was never noticed: {outcomes:?}"
        );
    });
}

// ---------------------------------------------------------------------------------------

#[test]
fn timeouts_bound_the_waits() {
    let chan = Options::new().capacity(64).anonymous().unwrap();
    let mut tx = chan.sender().unwrap();
    let mut rx = chan.receiver().unwrap();
    let t = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_millis(30)).unwrap(), None);
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(rx.try_recv().unwrap(), None);
    // 64 bytes hold one record of up to 48 bytes (a header, and a zero word after it).
    assert!(tx.try_send(&[1; 48]).unwrap());
    assert!(!tx.try_send(&[2; 1]).unwrap());
    let t = Instant::now();
    assert!(!tx.send_timeout(&[2; 1], Duration::from_millis(30)).unwrap());
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(tx.send(&[0; 49]).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(rx.recv().unwrap(), [1; 48]);
    assert!(tx.try_send(&[2; 1]).unwrap());
    assert_eq!(rx.recv().unwrap(), [2]);
    // Values by copy.
    tx.send_value(&[1.5f64, 2.5]).unwrap();
    assert_eq!(rx.recv_value::<[f64; 2]>().unwrap(), [1.5, 2.5]);
    tx.send_value(&7u32).unwrap();
    assert_eq!(
        rx.recv_value::<u64>().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn a_second_receiver_is_refused_and_a_closed_one_disconnects_senders() {
    let chan = Channel::anonymous(4096).unwrap();
    let rx = chan.receiver().unwrap();
    assert_eq!(chan.receiver().unwrap_err().kind(), ErrorKind::AddressInUse);
    let mut tx = chan.sender().unwrap();
    assert_eq!(chan.sender().unwrap_err().kind(), ErrorKind::ResourceLimit);
    tx.send(b"x").unwrap();
    drop(rx);
    assert_eq!(tx.send(b"y").unwrap_err().kind(), ErrorKind::Disconnected);
    // A new receiver takes over, and finds what was sent and not taken.
    let mut rx = chan.receiver().unwrap();
    assert_eq!(rx.recv().unwrap(), b"x");
    tx.send(b"z").unwrap();
    assert_eq!(rx.recv().unwrap(), b"z");
}

#[test]
fn named_channels_are_exclusive_private_and_checked() {
    let name = unique("named");
    let chan = Channel::create(&name, 4096).unwrap();
    assert_eq!(
        Channel::create(&name, 4096).unwrap_err().kind(),
        ErrorKind::AddressInUse
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(format!("/dev/shm/mman.{name}"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A broadcast is not a channel, and an object of another format is refused.
    assert_eq!(Broadcast::open(&name).unwrap_err().kind(), ErrorKind::Corrupted);
    let other = unique("other");
    let obj = mman::shm::SharedMemory::create(&other, 8192).unwrap();
    obj.map().unwrap().write_at(0, b"not a channel").unwrap();
    assert_eq!(Channel::open(&other).unwrap_err().kind(), ErrorKind::Corrupted);
    assert_eq!(
        channel::remove_stale(&other).unwrap_err().kind(),
        ErrorKind::Corrupted
    );
    assert!(object_exists(&other), "a foreign object is never removed");
    drop(obj);
    // Not stale while a handle lives (another open handle going does not remove it)...
    let rx = chan.receiver().unwrap();
    assert!(!channel::remove_stale(&name).unwrap());
    drop(Channel::open(&name).unwrap());
    assert!(
        object_exists(&name),
        "a second handle going took the name with it"
    );
    drop(rx);
    assert!(!channel::remove_stale(&name).unwrap());
    // ...and the last handle going removes it.
    drop(chan);
    assert!(!object_exists(&name));
}

const STALE: &str = "a_channel_left_by_a_killed_process_is_stale";

/// A process killed while it holds a named channel leaves the object behind; with no
/// process holding it, `remove_stale` removes it (however its owner words were left).
#[test]
fn a_channel_left_by_a_killed_process_is_stale() {
    if common::is("creator") {
        let chan = Channel::create(&env_name(), 4096).unwrap();
        let _tx = chan.sender().unwrap();
        let _rx = chan.receiver().unwrap();
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    if common::role().is_some() {
        return;
    }
    let name = unique("stale");
    let mut child = spawn(STALE, "creator", &name, &[]);
    let t = Instant::now();
    while !object_exists(&name) {
        assert!(t.elapsed() < Duration::from_secs(20), "the creator never made it");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Attached (the lock of its receiver is taken before anything can be sent to it).
    let chan = Channel::open(&name).unwrap();
    let t = Instant::now();
    while chan.receiver().is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the creator never attached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(chan);
    assert!(
        !channel::remove_stale(&name).unwrap(),
        "removed while its creator lives"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(channel::remove_stale(&name).unwrap());
    assert!(!object_exists(&name));
}

// ---------------------------------------------------------------------------------------

const SEALED: &str = "sealed_hand_off_is_zero_copy_and_refuses_unsealed";

#[test]
fn sealed_hand_off_is_zero_copy_and_refuses_unsealed() {
    if common::is("sender") {
        let chan = Channel::open(&env_name()).unwrap();
        let mut tx = chan.sender().unwrap();
        for size in [1usize << 20, 64 << 20] {
            let fd = mman::shm::Memfd::create("frame", size as u64).unwrap();
            {
                let map = fd.map().unwrap();
                map.write_at(0, b"big frame").unwrap();
                map.write_at(size - 4, b"end!").unwrap();
            }
            tx.send_sealed(fd).unwrap();
        }
        tx.flush().unwrap();
        return;
    }
    if common::role().is_some() {
        return;
    }
    let name = unique("sealed");
    let chan = Channel::create(&name, 4096).unwrap();
    let mut rx = chan.receiver().unwrap();
    let mut child = spawn(SEALED, "sender", &name, &[]);
    for size in [1usize << 20, 64 << 20] {
        match rx.recv_message().unwrap() {
            Message::Sealed(view) => {
                assert_eq!(view.len(), size);
                assert_eq!(&view[..9], b"big frame");
                assert_eq!(&view[size - 4..], b"end!");
            }
            Message::Bytes(b) => panic!("a copy of {} bytes instead of a sealed view", b.len()),
        }
    }
    assert!(child.wait().unwrap().success());

    // A memfd that is not sealed against shrinking is refused as a channel region...
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let loose = mman::shm::Memfd::create("loose", 8192).unwrap();
    mman::shm::send_fd(&a, std::os::fd::AsFd::as_fd(&loose), b"x").unwrap();
    assert_eq!(
        Channel::recv_from(&b).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    // ...and a sealed-message record that points at an unsealed memfd is refused.
    let name = unique("forged");
    let chan = Channel::create(&name, 4096).unwrap();
    let mut rx = chan.receiver().unwrap();
    let _tx = chan.sender().unwrap(); // the lane's owner is this process, as the record says
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&loose)) as u64;
    let info = std::fs::metadata(format!("/proc/self/fd/{fd}")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let raw = mman::shm::SharedMemory::open(&name, 0).unwrap().map().unwrap();
    // One lane: its ring starts at 4096. A header: length 32, kind 1 (sealed), the stamp
    // of the first lap (bit 63).
    let rec: Vec<u8> = [
        32u64 | 1 << 32 | 1 << 63,
        std::process::id() as u64 | fd << 32,
        info.dev(),
        info.ino(),
        info.size(),
    ]
    .iter()
    .flat_map(|w| w.to_ne_bytes())
    .collect();
    raw.write_at(4104, &rec[8..]).unwrap();
    raw.write_at(4096, &rec[..8]).unwrap();
    let e = rx.recv_message().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
}

// ---------------------------------------------------------------------------------------

const BCAST: &str = "broadcast_subscribers_join_leave_and_lag_exactly";

#[test]
fn broadcast_subscribers_join_leave_and_lag_exactly() {
    if common::is("subscriber") {
        let bus = Broadcast::open(&env_name()).unwrap();
        let mut sub = bus.subscriber_waited_for().unwrap();
        // Tell the publisher we are in: a message on the reply channel.
        let reply = Channel::open(&format!("{}-reply", env_name())).unwrap();
        let mut tx = reply.sender().unwrap();
        tx.send(&sub.next_seq().to_le_bytes()).unwrap();
        let mut expect = sub.next_seq();
        let mut count = 0u64;
        loop {
            match sub.recv() {
                Ok(d) => {
                    assert_eq!(
                        (d.seq, d.missed),
                        (expect, 0),
                        "a waited-for subscriber misses nothing"
                    );
                    assert_eq!(d.data, d.seq.to_le_bytes());
                    expect += 1;
                    count += 1;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
                    break;
                }
            }
        }
        tx.send(&count.to_le_bytes()).unwrap();
        tx.flush().unwrap();
        return;
    }
    if common::role().is_some() {
        return;
    }
    // In one process, exact lag counts.
    let bus = broadcast::Options::new()
        .slots(16)
        .message_size(8)
        .subscribers(4)
        .anonymous()
        .unwrap();
    let mut publisher = bus.publisher().unwrap();
    let mut a = bus.subscriber().unwrap();
    for i in 0..10u64 {
        publisher.publish_value(&i).unwrap();
    }
    let mut b = bus.subscriber().unwrap();
    for i in 10..100u64 {
        publisher.publish_value(&i).unwrap();
    }
    let d = a.recv().unwrap();
    assert_eq!((d.seq, d.missed), (84, 84));
    let d = b.recv().unwrap();
    assert_eq!((d.seq, d.missed), (84, 74));
    let d = b.recv().unwrap();
    assert_eq!((d.seq, d.missed), (85, 0));
    drop(a);
    let c = bus.subscriber().unwrap();
    assert_eq!(c.next_seq(), 100);
    assert_eq!(b.try_recv().unwrap().unwrap().seq, 86);

    // Across processes: three waited-for subscribers join at different times and each
    // gets everything from its joining on, none missed, while the publisher runs ahead.
    let name = unique("bcast");
    let bus = broadcast::Options::new()
        .slots(64)
        .message_size(8)
        .create(&name)
        .unwrap();
    let reply = Options::new()
        .senders(3)
        .create(&format!("{name}-reply"))
        .unwrap();
    let mut rx = reply.receiver().unwrap();
    let mut publisher = bus.publisher().unwrap();
    let mut kids = Vec::new();
    let mut joined = Vec::new();
    let mut seq = 0u64;
    for _ in 0..3 {
        kids.push(spawn(BCAST, "subscriber", &name, &[]));
        let at = u64::from_le_bytes(rx.recv().unwrap()[..8].try_into().unwrap());
        joined.push(at);
        for _ in 0..20_000 {
            seq = publisher.publish_value(&seq).unwrap() + 1;
        }
    }
    drop(publisher);
    let mut counts: Vec<u64> = (0..3)
        .map(|_| u64::from_le_bytes(rx.recv().unwrap()[..8].try_into().unwrap()))
        .collect();
    counts.sort_unstable();
    let mut want: Vec<u64> = joined.iter().map(|j| seq - j).collect();
    want.sort_unstable();
    assert_eq!(counts, want);
    for k in &mut kids {
        assert!(k.wait().unwrap().success());
    }
}
