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

#[cfg(feature = "channel")]
#[test]
fn channel_fork_carries_the_parents_lines_to_the_child() {
    let out = example("channel_fork").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let child: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("child: ")).collect();
    assert_eq!(
        child,
        [
            "Hello, child.",
            "This line went through a ring in shared memory:",
            "I copied it in, you copy it out.",
            "Goodbye.",
            "the parent closed the channel after 4 lines",
        ],
        "{text}"
    );
    assert!(
        text.ends_with("parent: sent 4 lines; the child exited with status 0\n"),
        "{text}"
    );
}

/// The names an example printed as `/mman.NAME...` are gone once it has ended.
#[cfg(feature = "channel")]
fn assert_removed(text: &str, names: &[String]) {
    for n in names {
        assert!(
            !std::path::Path::new("/dev/shm")
                .join(n.trim_start_matches('/'))
                .exists(),
            "{n} left behind: {text}"
        );
    }
}

/// The `/mman.*` names in a line.
#[cfg(feature = "channel")]
fn object_names(line: &str) -> Vec<String> {
    line.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("/mman."))
        .map(String::from)
        .collect()
}

#[cfg(feature = "channel")]
#[test]
fn channel_request_response_answers_every_request_of_an_unrelated_client() {
    let out = example("channel_request_response").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("server: channels /mman.example-rr-"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("client: 1000 requests, 1000 right answers, ")),
        "{text}"
    );
    assert!(
        lines.contains(&"server: answered 1000 requests; the client left"),
        "{text}"
    );
    assert_eq!(
        lines.last(),
        Some(&"server: the client exited (exit status: 0)"),
        "{text}"
    );
    let names = object_names(lines[0]);
    assert_eq!(names.len(), 2, "{text}");
    assert_removed(&text, &names);
}

#[cfg(feature = "channel")]
#[test]
fn channel_broadcast_tells_the_slow_subscriber_what_it_missed() {
    let out = example("channel_broadcast").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // "ROLE: joined at J, first F, last L, received R, missed M, mean age A us (WHY)"
    let num = |line: &str, key: &str| -> u64 {
        let at = line.find(key).unwrap_or_else(|| panic!("no {key:?} in {line:?}")) + key.len();
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number after {key:?} in {line:?}"))
    };
    let summary = |role: &str| -> (u64, u64, u64, u64, u64, &str) {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{role}: ")))
            .unwrap_or_else(|| panic!("no line of {role}: {text}"));
        let (j, f, l, r, m) = (
            num(line, "joined at "),
            num(line, ", first "),
            num(line, ", last "),
            num(line, ", received "),
            num(line, ", missed "),
        );
        // Every frame from the one it joined at to the last it got was received or missed.
        assert_eq!(r + m, l + 1 - j, "{line}");
        assert!(j <= f && f <= l, "{line}");
        (j, f, l, r, m, line)
    };
    let (j, f, l, r, m, line) = summary("waited");
    assert!(line.ends_with("(the publisher closed)"), "{text}");
    assert_eq!((f, l, m), (j, 499, 0), "{text}");
    assert_eq!(r, 500 - j, "{text}");
    let (_, _, l, _, m, line) = summary("slow");
    assert!(line.ends_with("(the publisher closed)"), "{text}");
    assert_eq!(l, 499, "{text}");
    assert!(m > 0, "the slow subscriber missed nothing: {text}");
    let (_, _, _, r, _, line) = summary("leaver");
    assert!(line.ends_with("(left early)"), "{text}");
    assert_eq!(r, 50, "{text}");
    assert!(text.contains("publisher: 500 frames in "), "{text}");
    let first = text.lines().next().unwrap_or_default();
    let names = object_names(first);
    assert_eq!(names.len(), 1, "{text}");
    assert_removed(&text, &names);
}
