//! A `sync::Mutex` held by a program that calls `exec` is recovered: exec keeps the TID and
//! the start time of the process's first thread, so a lock it held must not look held by
//! the new program for as long as that runs.
//!
//! Without the test harness (`harness = false`): the holder must be the first thread of
//! its process (the one whose TID survives exec), which a harness's test never runs on.
//! The binary re-runs itself as the holder: it locks on its main thread and execs
//! `sleep`, keeping the guard.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mman::sync::Mutex;

const ROLE: &str = "MMAN_TEST_ROLE";
const FILE: &str = "MMAN_TEST_FILE";

fn mutex_file(path: &str) -> mman::Mapping {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.set_len(4096).unwrap();
    mman::MapOptions::new().read_write().shared().map(&f).unwrap()
}

fn holder() {
    let map = mutex_file(&std::env::var(FILE).unwrap());
    let m = Mutex::<u64>::open(&map, 0, || 0).unwrap();
    let mut g = m.lock().unwrap();
    *g = 41;
    g.write_back();
    println!("locked");
    // The guard stays: the process becomes `sleep`, holding the lock.
    let e = Command::new("sleep").arg("30").exec();
    panic!("exec sleep: {e}");
}

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("holder") {
        holder();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutex");
    let path = path.to_str().unwrap();
    let map = mutex_file(path);
    let m = Mutex::<u64>::open(&map, 0, || 0).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "holder")
        .env(FILE, path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "locked\n", "the holder did not lock");
    // Wait until the holder is `sleep` (exec done).
    let comm = format!("/proc/{}/comm", child.id());
    let t = Instant::now();
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(t.elapsed() < Duration::from_secs(10), "the holder never execed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = m.lock_timeout(Duration::from_secs(5)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let mut g = got.expect("the lock of a holder that execed was never recovered (5 s)");
    assert!(g.owner_died(), "taken over from a holder that execed: owner_died");
    assert_eq!(*g, 41, "what the holder wrote back is there");
    g.make_consistent().unwrap();
    drop(g);
    println!("sync_exec: a lock held across exec is recovered: ok");
}
