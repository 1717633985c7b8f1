//! The seed programs in `examples/` (built by `cargo test`) do what the course notes' C does.

use std::process::Command;

fn example(name: &str) -> Command {
    // target/<profile>/deps/examples-HASH -> target/<profile>/examples/NAME
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    Command::new(dir.join("examples").join(name))
}

#[test]
fn mmap_cat_prints_the_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    let out = example("mmap_cat").arg(&p).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, data);
    let out = example("mmap_cat")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing: No such file"),
        "{out:?}"
    );
}

#[test]
fn share_shows_shared_and_private_memory() {
    let out = example("share").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Memory mapped at 0x"), "{text}");
    assert!(text.ends_with("0 1 2 3 4 5 6 7 8 9\n"), "{text}");
    let out = example("share").arg("-private").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("0 0 0 0 0 0 0 0 0 0\n"));
}

#[test]
fn semaphore_hands_the_numbers_over_and_private_memory_does_not() {
    let out = example("semaphore").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0 1 2 3 4 5 6 7 8 9\n");
    let out = example("semaphore").arg("-private").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no post arrived"),
        "{out:?}"
    );
}

#[test]
fn persist_keeps_a_page_across_processes_in_both_forms() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    for (form, msg) in [(None, "safe form"), (Some("-fixed"), "the notes' MAP_FIXED form")] {
        let mut w = example("persist");
        w.arg("-write")
            .args(form)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped());
        let mut child = w.spawn().unwrap();
        child.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        // Read back with the other form: the same file, the same bytes.
        let other = if form.is_some() { None } else { Some("-fixed") };
        let out = example("persist")
            .args(other)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), msg);
    }
}

#[test]
fn two_unrelated_processes_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let board = dir.path().join("board");
    let mut waiter = example("unrelated")
        .arg("wait")
        .arg(&board)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Speak only once the waiter has mapped the board and noted the generation.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(waiter.stdout.take().unwrap()));
    assert!(lines
        .next()
        .unwrap()
        .unwrap()
        .starts_with("waiting for a message"));
    let st = example("unrelated")
        .arg("say")
        .arg(&board)
        .arg("hello, stranger")
        .status()
        .unwrap();
    assert!(st.success());
    assert!(waiter.wait().unwrap().success());
    let out = lines.next().unwrap().unwrap() + "\n";
    assert_eq!(out, "hello, stranger\n");
}

#[test]
fn philosophers_all_eat_every_meal() {
    let out = example("philosophers").args(["5", "2000"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.ends_with("ate 2000 meals")).count(),
        5,
        "{text}"
    );
}
