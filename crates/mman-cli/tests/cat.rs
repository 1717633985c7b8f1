//! `mman cat` against GNU cat: same bytes, same errors, same exit status, for every method.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

const VIAS: &[&str] = &["auto", "map", "vmsplice", "splice", "read", "copy_file_range"];
const SIZES: &[usize] = &[0, 1, 4095, 4096, 4097, (1 << 20) + 3];

fn mman() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mman"))
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fixture() -> (tempfile::TempDir, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let files = SIZES
        .iter()
        .map(|&n| {
            let p = dir.path().join(format!("f{n}"));
            std::fs::write(&p, random_bytes(n, n as u64 + 7)).unwrap();
            p
        })
        .collect();
    (dir, files)
}

fn gnu_cat(args: &[&std::path::Path]) -> Vec<u8> {
    Command::new("cat").args(args).output().unwrap().stdout
}

#[test]
fn every_method_matches_gnu_cat_into_a_pipe_and_a_file() {
    let (dir, files) = fixture();
    for via in VIAS {
        for f in &files {
            let want = std::fs::read(f).unwrap();
            let out = mman().args(["cat", "--via", via]).arg(f).output().unwrap();
            assert!(out.status.success(), "{via} {f:?}: {out:?}");
            assert!(out.stdout == want, "{via} {f:?}: pipe output differs");
            let dest = dir.path().join("out");
            let o = std::fs::File::create(&dest).unwrap();
            let st = mman()
                .args(["cat", "--via", via])
                .arg(f)
                .stdout(o)
                .status()
                .unwrap();
            assert!(st.success());
            assert!(
                std::fs::read(&dest).unwrap() == want,
                "{via} {f:?}: file output differs"
            );
        }
        // Several files in order, into a pipe.
        let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
        let out = mman().args(["cat", "--via", via]).args(&refs).output().unwrap();
        assert!(out.stdout == gnu_cat(&refs), "{via}: several files");
    }
}

#[test]
fn stdin_dash_and_no_argument_from_a_file_and_a_pipe() {
    let (_dir, files) = fixture();
    let big = &files[5];
    let want = std::fs::read(big).unwrap();
    for via in VIAS {
        for args in [vec!["cat", "--via", via], vec!["cat", "--via", via, "-"]] {
            let input = std::fs::File::open(big).unwrap();
            let out = mman().args(&args).stdin(input).output().unwrap();
            assert!(out.stdout == want, "{via} {args:?}: stdin from a file");
            let mut child = mman()
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut w = child.stdin.take().unwrap();
            let data = want.clone();
            let feeder = std::thread::spawn(move || w.write_all(&data).unwrap());
            let out = child.wait_with_output().unwrap();
            feeder.join().unwrap();
            assert!(out.stdout == want, "{via} {args:?}: stdin from a pipe");
        }
    }
    // A file, stdin, and a file again: stdin read at its current offset, in order.
    let input = std::fs::File::open(&files[2]).unwrap();
    let out = mman()
        .arg("cat")
        .arg(&files[1])
        .arg("-")
        .arg(&files[3])
        .stdin(input)
        .output()
        .unwrap();
    let mut want = std::fs::read(&files[1]).unwrap();
    want.extend(std::fs::read(&files[2]).unwrap());
    want.extend(std::fs::read(&files[3]).unwrap());
    assert!(out.stdout == want);
}

#[test]
fn fifo_proc_file_and_character_device() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let data = random_bytes(300_000, 3);
    for via in VIAS {
        let (f2, d2) = (fifo.clone(), data.clone());
        let writer = std::thread::spawn(move || std::fs::write(f2, d2).unwrap());
        let out = mman().args(["cat", "--via", via]).arg(&fifo).output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success() && out.stdout == data, "{via}: fifo");
        let out = mman()
            .args(["cat", "--via", via, "/proc/version"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            out.stdout,
            std::fs::read("/proc/version").unwrap(),
            "{via}: /proc file"
        );
        let out = mman().args(["cat", "--via", via, "/dev/null"]).output().unwrap();
        assert!(out.status.success() && out.stdout.is_empty(), "{via}: /dev/null");
    }
}

#[test]
fn missing_files_and_directories_are_reported_and_the_rest_printed() {
    let (dir, files) = fixture();
    let missing = dir.path().join("nope");
    for via in VIAS {
        let out = mman()
            .args(["cat", "--via", via])
            .arg(&files[1])
            .arg(&missing)
            .arg(dir.path())
            .arg(&files[2])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{via}");
        let mut want = std::fs::read(&files[1]).unwrap();
        want.extend(std::fs::read(&files[2]).unwrap());
        assert!(out.stdout == want, "{via}: the readable files are printed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "mman: cat: {}: No such file or directory",
                missing.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("mman: cat: {}: Is a directory", dir.path().display())),
            "{err}"
        );
    }
}

#[test]
fn input_is_output_is_refused_but_truncating_redirection_works() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"some text\n").unwrap();
    let script = format!("{} cat f >> f", env!("CARGO_BIN_EXE_mman"));
    let out = Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mman: cat: f: input file is output file"));
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"some text\n",
        "the file must be unchanged"
    );

    std::fs::write(dir.path().join("doc"), b"old doc\n").unwrap();
    std::fs::write(dir.path().join("doc.end"), b"the end\n").unwrap();
    for (tool, out_name) in [("cat", "doc"), (env!("CARGO_BIN_EXE_mman"), "doc2")] {
        if out_name == "doc2" {
            std::fs::write(dir.path().join("doc2"), b"old doc\n").unwrap();
        }
        let sub = if tool == "cat" { "" } else { " cat" };
        let script = format!("{tool}{sub} {out_name} doc.end > {out_name}");
        let st = Command::new("sh")
            .args(["-c", &script])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    }
    assert_eq!(
        std::fs::read(dir.path().join("doc")).unwrap(),
        std::fs::read(dir.path().join("doc2")).unwrap(),
        "mman and GNU cat differ on `cat doc doc.end > doc`"
    );
}

#[test]
fn a_closed_pipe_ends_by_sigpipe_quietly_as_gnu_cat() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'y'; 50 << 20]).unwrap();
    for via in VIAS {
        let mut child = mman()
            .args(["cat", "--via", via])
            .arg(&big)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut ten = [0u8; 10];
        out.read_exact(&mut ten).unwrap();
        drop(out);
        let res = child.wait_with_output().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&res.status),
            Some(libc::SIGPIPE),
            "{via}: {res:?}"
        );
        assert!(
            res.stderr.is_empty(),
            "{via}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
}

#[test]
fn stats_go_to_stderr_after_the_output() {
    let (_dir, files) = fixture();
    let out = mman()
        .args(["cat", "--stats", "--via", "splice"])
        .arg(&files[5])
        .output()
        .unwrap();
    assert_eq!(out.stdout, std::fs::read(&files[5]).unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("method splice"), "{err}");
    assert!(err.contains(&format!("{} bytes", (1 << 20) + 3)), "{err}");
    assert!(
        err.contains("page faults") && err.contains("syscalls") && err.contains("GiB/s"),
        "{err}"
    );
}

#[test]
fn a_non_blocking_stdout_gets_every_byte_once() {
    let (_dir, files) = fixture();
    let want = std::fs::read(&files[5]).unwrap();
    for via in VIAS {
        let (rd, wr) = std::io::pipe().unwrap();
        // SAFETY: fcntl on a pipe descriptor we own.
        unsafe {
            let fl = libc::fcntl(wr.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let child = mman()
            .args(["cat", "--via", via])
            .arg(&files[5])
            .stdout(wr)
            .spawn()
            .unwrap();
        // A slow reader, so the writer meets a full pipe (EAGAIN) many times.
        let mut got = Vec::new();
        let mut rd = rd;
        let mut buf = [0u8; 4096];
        loop {
            let n = rd.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() % (256 << 10) < 4096 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        let st = child.wait_with_output().unwrap();
        assert!(st.status.success(), "{via}: {st:?}");
        assert!(
            got == want,
            "{via}: {} bytes instead of {}",
            got.len(),
            want.len()
        );
    }
}
