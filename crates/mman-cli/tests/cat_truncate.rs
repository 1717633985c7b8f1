//! `mman cat` on a file that shrinks while it is being written out into a slow reader:
//! an error naming both sizes and exit status 1, never death by a signal.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const SIZE: u64 = 64 << 20;
const SHRUNK: u64 = 1 << 20;

fn shrink_during_cat(via: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinking");
    std::fs::write(&path, vec![b'x'; SIZE as usize]).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mman"))
        .args(["cat", "--via", via])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    // A slow reader: take a little, then shrink the file under the writer.
    let mut first = vec![0u8; 256 << 10];
    out.read_exact(&mut first).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(SHRUNK)
        .unwrap();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        None,
        "--via {via}: killed by a signal; stderr: {err}"
    );
    assert_eq!(status.code(), Some(1), "--via {via}: stderr: {err}");
    let want = format!(
        "mman: cat: {}: file shrank from {SIZE} to {SHRUNK} bytes while reading",
        path.display()
    );
    assert!(err.contains(&want), "--via {via}: got {err:?}, want {want:?}");
    // Whatever came out is a prefix of the original content.
    // Up to the new end, the file's bytes. Past it, the copying methods gave what they read
    // before the truncation; the zero-copy ones (splice, vmsplice) handed the pipe references
    // to page-cache pages, and pages the truncation dropped reach the reader as zeros.
    let all: Vec<u8> = first.iter().chain(&rest).copied().collect();
    let zero_copy = matches!(via, "splice" | "vmsplice" | "auto");
    for (i, &b) in all.iter().enumerate() {
        let ok = b == b'x' || (zero_copy && i as u64 >= SHRUNK && b == 0);
        assert!(ok, "--via {via}: byte {i} of {} is {b:#x}", all.len());
    }
    assert!((first.len() + rest.len()) as u64 <= SIZE);
}

#[test]
fn shrinking_file_via_map() {
    shrink_during_cat("map");
}

#[test]
fn shrinking_file_via_vmsplice() {
    shrink_during_cat("vmsplice");
}

#[test]
fn shrinking_file_via_splice() {
    shrink_during_cat("splice");
}

#[test]
fn shrinking_file_via_read() {
    shrink_during_cat("read");
}

#[test]
fn shrinking_file_via_auto() {
    shrink_during_cat("auto");
}
