//! `transfer`: a file that shrinks while it is copied into a pipe is an error with every
//! method, however it shrinks (inside its last page, or before the next window is mapped).

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use mman::transfer::{Method, Side, Sink, Transfer, TransferError};
use mman::ErrorKind;

/// Copy `path` (of `size` bytes) into a pipe with `method` while the reader, once it has
/// taken `first` bytes (so the copy is under way and blocked on the full pipe), shrinks the
/// file to `shrunk` bytes and then drains the pipe. Returns the copy's result and what came
/// out of the pipe.
fn copy_while_shrinking(
    path: &std::path::Path,
    method: Method,
    first: usize,
    shrunk: u64,
) -> (Result<Transfer, TransferError>, Vec<u8>) {
    let (rd, wr): (OwnedFd, OwnedFd) = rustix::pipe::pipe().unwrap();
    let input = std::fs::File::open(path).unwrap();
    std::thread::scope(|s| {
        let copier = s.spawn(|| {
            let wr = wr;
            let mut sink = Sink::new(wr.as_fd());
            sink.copy_from(input.as_fd(), path, method)
            // `wr` closes here: the reader sees the end.
        });
        let mut out = std::fs::File::from(rd);
        let mut got = vec![0u8; first];
        out.read_exact(&mut got).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(shrunk)
            .unwrap();
        out.read_to_end(&mut got).unwrap();
        (copier.join().unwrap(), got)
    })
}

fn assert_truncated(method: Method, r: &Result<Transfer, TransferError>, out: &[u8], size: u64, shrunk: u64) {
    match r {
        Ok(t) => panic!(
            "{method:?}: a file that shrank from {size} to {shrunk} bytes was copied without an error: \
             {} bytes, {} of them zeros past the new end",
            t.bytes,
            out.iter().skip(shrunk as usize).filter(|&&b| b == 0).count()
        ),
        Err(e) => {
            assert_eq!(e.side, Side::Input, "{method:?}: {e}");
            assert_eq!(e.error.kind(), ErrorKind::Truncated, "{method:?}: {e}");
        }
    }
}

/// A truncation that ends inside the file's last page raises no fault: a mapping reads the
/// rest of that page as zeros, and a pipe holding the page shows them. Without a check of
/// the file's size at the end, the zeros went out as the file's last bytes, with success.
#[test]
fn a_file_shrinking_inside_its_last_page_is_reported_by_every_method() {
    const SIZE: u64 = 4 << 20;
    const SHRUNK: u64 = SIZE - 100;
    for method in [
        Method::Map,
        Method::Vmsplice,
        Method::Splice,
        Method::Read,
        Method::Auto,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks");
        std::fs::write(&path, vec![b'x'; SIZE as usize]).unwrap();
        let (r, out) = copy_while_shrinking(&path, method, 256 << 10, SHRUNK);
        assert_truncated(method, &r, &out, SIZE, SHRUNK);
        // Up to the new end, the file's bytes.
        assert!(out.iter().take(SHRUNK as usize).all(|&b| b == b'x'), "{method:?}");
    }
}

/// A file larger than one mapping window that shrinks before the next window is mapped: the
/// mapping of a range now past the end of the file is refused, which is the shrink, not a
/// bad argument.
#[test]
fn a_file_shrinking_before_its_next_window_is_mapped_is_reported_as_truncated() {
    // One window (256 MiB) and two pages more, sparse: no disk space is used.
    const SIZE: u64 = (256 << 20) + 8192;
    const SHRUNK: u64 = (256 << 20) + 100;
    for method in [Method::Map, Method::Vmsplice] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
        let (r, _) = copy_while_shrinking(&path, method, 256 << 10, SHRUNK);
        assert_truncated(method, &r, &[], SIZE, SHRUNK);
    }
}
