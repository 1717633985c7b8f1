//! `mman tour`: the course notes' ideas, one short section each, with the kernel's numbers.
//!
//! Each section is a function in [`SECTIONS`]; later features add theirs to the list.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use mman::transfer::{Method, Sink};
use mman::{FlushMode, LockAll, MapOptions, Protection, Usage};

mod channel;

/// Arguments of `mman tour`.
#[derive(Args, Debug)]
pub struct TourArgs {
    /// Run only this section; all when omitted. The sections: 1 mapping a file; 2
    /// MAP_PRIVATE vs MAP_SHARED; 3 mprotect; 4 mlock and mlockall; 5 msync; 6 when mmap
    /// pays; 7 parent and child sharing memory; 8 a semaphore in the mapping; 9 two
    /// unrelated processes; 10 dining philosophers; 11 a truncated file survived; 12 guard
    /// pages and secrets; 13 persistent variables; 14 the page cache and our own mappings;
    /// 15 parent and child talking through a channel.
    #[arg(long)]
    section: Option<usize>,
}

struct Tour {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

type Section = (&'static str, fn(&Tour) -> Result<()>);

const SECTIONS: &[Section] = &[
    ("Mapping a file and reading it", map_a_file),
    ("MAP_PRIVATE copy-on-write vs MAP_SHARED", private_vs_shared),
    ("mprotect: a write to a read-only page", protection),
    ("mlock and mlockall: keeping pages in RAM", locking),
    ("msync: from the page cache to the disk", syncing),
    (
        "When mmap pays: read() vs mapping vs vmsplice vs splice",
        when_mmap_pays,
    ),
    ("Parent and child sharing anonymous memory", sharing),
    ("A semaphore inside the mapping", semaphore),
    ("Two unrelated processes sharing a file", file_between_processes),
    ("Dining philosophers with processes", philosophers),
    ("A file truncated under a mapping, survived", truncation),
    ("Guard pages and locked secrets", guards_and_secrets),
    (
        "Persistent variables: a value that outlives its process",
        persistence,
    ),
    ("The page cache, and a look at our own mappings", page_cache),
    ("Parent and child talking through a channel", channel::section),
];

/// `mman tour`.
pub fn run(args: TourArgs) -> Result<()> {
    if let Some(s) = args.section {
        if s == 0 || s > SECTIONS.len() {
            bail!(
                "tour: there is no section {s}; sections are 1 to {}",
                SECTIONS.len()
            );
        }
    }
    let tour = Tour {
        dir: tempfile::Builder::new()
            .prefix("mman-tour")
            .tempdir()
            .context("tour: create a temporary directory (in $TMPDIR, which must be a writable directory)")?,
        exe: std::env::current_exe().context("tour: find the mman executable")?,
    };
    crate::cleanup::remove_on_signal(tour.dir.path());
    outln!("mman tour: the Unix memory-mapping API, one idea at a time.")?;
    outln!(
        "(page size {} bytes; working in {}, removed at the end)",
        mman::page_size(),
        tour.dir.path().display()
    )?;
    for (i, (title, section)) in SECTIONS.iter().enumerate() {
        if args.section.is_some_and(|s| s != i + 1) {
            continue;
        }
        outln!("\n== {}. {title} ==", i + 1)?;
        section(&tour).with_context(|| format!("tour section {}: {title}", i + 1))?;
    }
    outln!("\nThat was the tour. `mman --help` lists the commands; the README has the library.")?;
    Ok(())
}

impl Tour {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn mman(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.exe)
            .args(args)
            .output()
            .with_context(|| format!("run mman {}", args.join(" ")))
    }
}

fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn map_a_file(t: &Tour) -> Result<()> {
    let path = t.path("hello.txt");
    let text: String = (0..200)
        .map(|i| format!("line {i:03} of a file read through a mapping\n"))
        .collect();
    std::fs::write(&path, &text)?;
    let map = MapOptions::new().map_path(&path)?;
    outln!(
        "mapped {} ({} bytes) read-only, shared, at {:p}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        map.len(),
        map.as_ptr()
    )?;
    let line_len = text.find('\n').unwrap_or(0);
    let mut first = vec![0u8; line_len];
    map.read_at(0, &mut first)?;
    outln!(
        "the first line, copied out of the mapping: {:?}",
        String::from_utf8_lossy(&first)
    )?;
    let at = MapOptions::new().offset(5000).len(20).map_path(&path)?;
    let mut line = vec![0u8; 20];
    at.read_at(0, &mut line)?;
    outln!(
        "offset 5000 is not page-aligned: mman maps from offset {} and hands back exactly bytes 5000..5020: {:?}",
        5000 / mman::page_size() * mman::page_size(),
        String::from_utf8_lossy(&line)
    )?;
    let empty = t.path("empty");
    std::fs::write(&empty, b"")?;
    let e = MapOptions::new().map_path(&empty)?;
    outln!(
        "an empty file maps to an empty mapping ({} bytes): mmap(2) itself would refuse length 0",
        e.len()
    )?;
    Ok(())
}

fn private_vs_shared(t: &Tour) -> Result<()> {
    let path = t.path("cow.txt");
    std::fs::write(&path, b"original contents")?;
    let private = MapOptions::new().read_write().private().map_path(&path)?;
    private.write_at(0, b"PRIVATE!")?;
    let mut seen = vec![0u8; 17];
    private.read_at(0, &mut seen)?;
    outln!(
        "wrote through a MAP_PRIVATE mapping; it reads {:?}",
        String::from_utf8_lossy(&seen)
    )?;
    outln!(
        "but the file still holds {:?}: the write went to a private copy of the page (copy-on-write)",
        String::from_utf8_lossy(&std::fs::read(&path)?)
    )?;
    let shared = MapOptions::new().read_write().shared().map_path(&path)?;
    shared.write_at(0, b"SHARED!!")?;
    outln!(
        "wrote through a MAP_SHARED mapping; read() of the file now gives {:?}",
        String::from_utf8_lossy(&std::fs::read(&path)?)
    )?;
    private.read_at(0, &mut seen)?;
    outln!(
        "the private copy keeps its own page: {:?}",
        String::from_utf8_lossy(&seen)
    )?;
    Ok(())
}

fn protection(t: &Tour) -> Result<()> {
    let mut map = MapOptions::new().len(mman::page_size()).map_anonymous()?;
    map.protect(Protection::READ)?;
    outln!(
        "a page made read-only with mprotect(PROT_READ): {}",
        map.protection()
    )?;
    match map.write_at(0, b"x") {
        Err(e) => outln!("mman refuses the write up front: {e}")?,
        Ok(()) => bail!("a write to a read-only mapping succeeded"),
    }
    if let Err(e) = map.protect(Protection::READ | Protection::WRITE | Protection::EXEC) {
        outln!("and write+exec together is refused (W^X): {e}")?;
    }
    let out = t.mman(&["__tour-child", "protect-write"])?;
    match out.status.signal() {
        Some(sig) => outln!(
            "a child that writes to a read-only page with a raw pointer is killed by signal {sig} ({})",
            if sig == libc::SIGSEGV {
                "SIGSEGV"
            } else {
                "unexpected"
            }
        )?,
        None => outln!("the child was not killed by a signal: status {}", out.status)?,
    }
    Ok(())
}

fn locking(_: &Tour) -> Result<()> {
    let (soft, hard) = mman::memlock_limit();
    let show = |l: Option<u64>| l.map_or("unlimited".to_string(), kib);
    outln!(
        "RLIMIT_MEMLOCK: {} (hard {}); root or CAP_IPC_LOCK is not bound by it",
        show(soft),
        show(hard)
    )?;
    let map = MapOptions::new().len(1 << 20).map_anonymous()?;
    let before = status_kib("VmLck:");
    match map.lock(..) {
        Ok(()) => {
            outln!(
                "mlock of 1 MiB: VmLck {} -> {}",
                kib(before * 1024),
                kib(status_kib("VmLck:") * 1024)
            )?;
            let r = map.residency(..)?;
            outln!(
                "mincore: {} of {} pages resident (mlock faults them all in)",
                r.resident(),
                r.pages()
            )?;
            map.unlock(..)?;
            outln!("munlock: VmLck back to {}", kib(status_kib("VmLck:") * 1024))?;
        }
        Err(e) => outln!("mlock failed, as the limit says it may: {e}")?,
    }
    match mman::lock_all(LockAll {
        current: true,
        future: false,
        on_fault: true,
    }) {
        Ok(()) => {
            outln!(
                "mlockall(MCL_CURRENT | MCL_ONFAULT): every mapping locked as it is touched; VmLck {}",
                kib(status_kib("VmLck:") * 1024)
            )?;
            mman::unlock_all()?;
            outln!("munlockall: VmLck {}", kib(status_kib("VmLck:") * 1024))?;
        }
        Err(e) => {
            let mapped = status_kib("VmSize:") * 1024;
            outln!(
                "mlockall(MCL_CURRENT) would lock all {} this process maps, more than RLIMIT_MEMLOCK allows: {}",
                kib(mapped),
                e
            )?;
            lock_what_the_limit_allows(soft)?;
        }
    }
    Ok(())
}

/// Without the right to lock everything: lock as much as RLIMIT_MEMLOCK allows, and show it.
fn lock_what_the_limit_allows(soft: Option<u64>) -> Result<()> {
    let ps = mman::page_size() as u64;
    let already = status_kib("VmLck:") * 1024;
    let room = soft.unwrap_or(u64::MAX).saturating_sub(already).min(64 << 20) / ps * ps;
    if room == 0 {
        outln!("the limit leaves no room to lock anything more here")?;
        return Ok(());
    }
    let map = MapOptions::new().len(room as usize).map_anonymous()?;
    match map.lock(..) {
        Ok(()) => outln!(
            "locked what the limit allows instead: {} with mlock; VmLck {}",
            kib(room),
            kib(status_kib("VmLck:") * 1024)
        )?,
        Err(e) => outln!("even {} could not be locked: {e}", kib(room))?,
    }
    Ok(())
}

fn syncing(t: &Tour) -> Result<()> {
    let path = t.path("journal");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.set_len(4 << 20)?;
    let map = MapOptions::new().read_write().shared().map(&file)?;
    for page in 0..1024 {
        map.write_at(page * 4096, b"dirty page")?;
    }
    let mut head = [0u8; 10];
    (&file).read_exact(&mut head)?;
    outln!(
        "wrote 1024 pages through a shared mapping; read() already sees {:?}: one page cache, two views",
        String::from_utf8_lossy(&head)
    )?;
    let t0 = Instant::now();
    map.flush(.., FlushMode::Async)?;
    let async_s = t0.elapsed();
    let t0 = Instant::now();
    map.flush(.., FlushMode::Sync)?;
    let sync_s = t0.elapsed();
    outln!("msync(MS_ASYNC) took {async_s:?}: on Linux it does nothing, the kernel writes dirty pages back anyway")?;
    if on_tmpfs(&file) {
        outln!(
            "msync(MS_SYNC) took {sync_s:?}: {} is on tmpfs, memory with no disk behind it, so there was nothing to wait for",
            t.dir.path().display()
        )?;
    } else {
        outln!("msync(MS_SYNC) took {sync_s:?}: it waited for 4 MiB to reach the disk")?;
    }
    map.flush(.., FlushMode::Invalidate)?;
    outln!("msync(MS_INVALIDATE): later reads come from the file as it is now")?;
    Ok(())
}

/// Whether the file lives on tmpfs (or ramfs): memory, where msync has no disk to wait for.
fn on_tmpfs(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs fills the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to our struct.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    matches!(st.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC)
}

fn make_file(path: &Path, len: usize) -> Result<()> {
    let mut block = vec![0u8; 1 << 20];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let mut f = std::fs::File::create(path)?;
    for _ in 0..len / block.len() {
        f.write_all(&block)?;
    }
    Ok(())
}

fn when_mmap_pays(t: &Tour) -> Result<()> {
    const LEN: usize = 128 << 20;
    let path = t.path("big");
    make_file(&path, LEN)?;
    let _ = std::fs::read(&path)?; // warm the page cache: we measure the CPU side
    outln!("moving a 128 MiB file (in the page cache) into a pipe, each way in turn:")?;
    outln!(
        "  {:<34} {:>9} {:>9} {:>13}",
        "method",
        "seconds",
        "GiB/s",
        "page faults"
    )?;
    let mut map_faults = 0u64;
    for (label, method) in [
        ("read() + write(), like GNU cat", Method::Read),
        ("write() from a mapping (the notes' cat)", Method::Map),
        ("vmsplice() of mapped pages", Method::Vmsplice),
        ("splice() from the page cache", Method::Splice),
    ] {
        let file = std::fs::File::open(&path)?;
        let (rd, wr) = std::io::pipe()?;
        let drain = std::thread::spawn(move || {
            let mut rd = rd;
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            while let Ok(k) = rd.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            n
        });
        let before = Usage::now();
        let t0 = Instant::now();
        let moved = {
            use std::os::fd::AsFd;
            let mut sink = Sink::new(wr.as_fd());
            sink.copy_from(file.as_fd(), &path, method)?.bytes
        };
        let secs = t0.elapsed().as_secs_f64();
        let used = Usage::now().since(&before);
        drop(wr);
        let got = drain
            .join()
            .map_err(|_| anyhow::anyhow!("the pipe reader panicked"))?;
        if got != moved || got != LEN as u64 {
            bail!("{label}: moved {moved} bytes, the reader got {got}");
        }
        let faults = used.minor_faults + used.major_faults;
        if method == Method::Map {
            map_faults = faults;
        }
        outln!(
            "  {label:<34} {secs:>9.3} {:>9.2} {:>13}",
            LEN as f64 / (1u64 << 30) as f64 / secs,
            faults
        )?;
    }
    outln!("splice moves page-cache pages into the pipe without the CPU copying them; vmsplice")?;
    outln!("hands over mapped pages by reference; write() from a mapping pays page faults, TLB")?;
    let pages = (LEN / mman::page_size()) as u64;
    outln!(
        "misses over 128 MiB of addresses and a page-table teardown: here {map_faults} faults for {pages} pages,"
    )?;
    outln!(
        "one per {} pages (the kernel maps the pages around each fault, and large folios at once),",
        pages / map_faults.max(1)
    )?;
    outln!("while read() copies twice but through one 128 KiB buffer that stays in the cache.")?;
    Ok(())
}

fn sharing(t: &Tour) -> Result<()> {
    for args in [&["share"][..], &["share", "--private"][..]] {
        let out = t.mman(args)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (addr, numbers) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        outln!(
            "mman {:<16} {addr}; the child wrote 0..9, the parent reads: {numbers}",
            args.join(" ")
        )?;
    }
    outln!("MAP_SHARED: one page, both processes. MAP_PRIVATE: the child's writes went to its copy.")?;
    Ok(())
}

fn semaphore(t: &Tour) -> Result<()> {
    let out = t.mman(&["semaphore"])?;
    outln!(
        "the parent waits on a semaphore that lives in the shared page; the child fills the numbers and posts: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    )?;
    outln!(
        "mman's Semaphore is 8 bytes: a count and a sleeper count; it spins briefly, then sleeps on a futex."
    )?;
    Ok(())
}

fn file_between_processes(t: &Tour) -> Result<()> {
    let path = t.path("shared-file");
    std::fs::write(&path, vec![0u8; 4096])?;
    let map = MapOptions::new().read_write().shared().map_path(&path)?;
    let word = map.atomic_u64(0)?;
    let path_s = path.to_string_lossy().into_owned();
    let out = t.mman(&["__tour-child", &format!("file-writer:{path_s}")])?;
    if !out.status.success() {
        bail!("the writer failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    outln!(
        "a separate process (started, not forked) mapped {} MAP_SHARED and stored a value;\nwe read it through our own mapping of the same file: {:#x}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        word.load(std::sync::atomic::Ordering::SeqCst)
    )?;
    Ok(())
}

fn philosophers(t: &Tour) -> Result<()> {
    let out = t.mman(&["philosophers", "-n", "5", "--seconds", "0.5"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    outln!("five philosopher processes, forks as semaphores in a MAP_SHARED file, half a second:")?;
    if let Some(summary) = text.lines().last() {
        outln!("  {summary}")?;
    }
    outln!("each takes the lower-numbered fork first: no cycle of waiting, so no deadlock.")?;
    let fairness = text
        .lines()
        .last()
        .and_then(|l| l.rsplit_once('('))
        .and_then(|(_, f)| f.trim_end_matches(')').parse::<f64>().ok());
    if let Some(f) = fairness.filter(|f| *f < 0.5) {
        outln!(
            "that rules out deadlock, not starvation: the hungriest ate {f:.2} of what the best-fed did. Semaphores"
        )?;
        outln!("promise no order: a philosopher still running takes its forks back before a sleeping neighbour wakes (for up to a millisecond).")?;
    }
    let fair = t.mman(&["philosophers", "-n", "5", "--seconds", "0.5", "--fair"])?;
    let fair = String::from_utf8_lossy(&fair.stdout);
    outln!("the same dinner with --fair (nobody starts a meal more than 64 ahead of a neighbour):")?;
    if let Some(summary) = fair.lines().last() {
        outln!("  {summary}")?;
    }
    Ok(())
}

fn truncation(t: &Tour) -> Result<()> {
    let path = t.path("shrinking");
    std::fs::write(&path, vec![b'x'; 16 * 4096])?;
    let map = MapOptions::new().map_path(&path)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(4096)?;
    outln!(
        "mapped a 64 KiB file, then truncated it to 4 KiB: in C, touching page 5 now kills you with SIGBUS"
    )?;
    let mut buf = vec![0u8; 4096];
    match map.read_at(5 * 4096, &mut buf) {
        Err(e) => outln!("mman caught the SIGBUS and says: {e}")?,
        Ok(()) => bail!("reading past the new end of a truncated file succeeded"),
    }
    Ok(())
}

fn guards_and_secrets(t: &Tour) -> Result<()> {
    let out = t.mman(&["__tour-child", "guard-overflow"])?;
    let said = String::from_utf8_lossy(&out.stderr);
    let sig = out
        .status
        .signal()
        .map_or("no signal".to_string(), |s| format!("signal {s}"));
    outln!("a child writes one byte past a 100-byte GuardedBuffer; it is killed by {sig} and said:")?;
    outln!("  {}", said.trim())?;
    let mut secret = mman::fault::Secret::<[u8; 32]>::zeroed()?;
    secret
        .expose_mut()?
        .copy_from_slice(b"correct horse battery staple!!!!");
    let p = secret.protections();
    outln!(
        "a Secret<[u8; 32]>: locked {}; out of core dumps {};",
        p.locked,
        p.excluded_from_core_dumps
    )?;
    outln!(
        "  hidden from children {}; in memfd_secret memory {}",
        p.hidden_from_children,
        p.secret_memory
    )?;
    Ok(())
}

fn persistence(t: &Tour) -> Result<()> {
    let page = t.path("persistent_data");
    let page_s = page.to_string_lossy().into_owned();
    let mut w = Command::new(&t.exe)
        .args(["persist", "--write", "--file", &page_s])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("run mman persist --write")?;
    w.stdin
        .take()
        .context("persist: stdin")?
        .write_all(b"written by one process, read by the next")?;
    w.wait()?;
    let r = t.mman(&["persist", "--read", "--file", &page_s])?;
    outln!("process 1 stored a line in a 4096-byte page that IS the file (MAP_SHARED):")?;
    outln!(
        "process 2 mapped the same file and read: {:?}",
        String::from_utf8_lossy(&r.stdout)
    )?;
    let counter = t.path("counter");
    let c = counter.to_string_lossy().into_owned();
    t.mman(&["counter", "--add", "100000", "--file", &c])?;
    t.mman(&["counter", "--add", "100", "--durable", "--file", &c])?;
    let n = t.mman(&["counter", "--check", "--file", &c])?;
    outln!(
        "a Durable<T> counter: 100000 process-crash-safe and 100 durable transactions later it reads {}",
        String::from_utf8_lossy(&n.stdout).trim()
    )?;
    outln!("each commit writes the inactive of two checksummed copies; a kill or a power loss mid-way")?;
    outln!("leaves the previous value, never a torn one.")?;
    Ok(())
}

fn page_cache(t: &Tour) -> Result<()> {
    use mman::cache::{CachedFile, PageRange};
    let path = t.path("cached");
    std::fs::write(&path, vec![42u8; 8 << 20])?;
    let f = CachedFile::open(&path)?;
    let show = |what: &str| -> Result<()> {
        let s = f.status(PageRange::ALL)?;
        let bar: String = f
            .buckets(PageRange::ALL, 32)?
            .unwrap_or_default()
            .iter()
            .map(|&(r, n)| {
                if r == 0 {
                    ' '
                } else if r == n {
                    'O'
                } else {
                    'o'
                }
            })
            .collect();
        outln!(
            "  {what:<38} [{bar}] {}/{} pages resident",
            s.resident.map_or("?".into(), |r| r.to_string()),
            s.pages
        )?;
        Ok(())
    };
    outln!("an 8 MiB file, just written: its pages sit in the page cache (cachestat(2) counts them)")?;
    show("after writing")?;
    f.evict(PageRange::ALL, true)?;
    show("after fdatasync + POSIX_FADV_DONTNEED")?;
    f.touch(PageRange::bytes(0, Some(2 << 20)))?;
    show("after touching the first 2 MiB")?;
    outln!("  (exactly 512 pages: read(2) would have read ahead, some MiB past what was asked)")?;
    let t2 = f.touch(PageRange::ALL)?;
    show(&format!("after touch (read {} missing pages)", t2.touched))?;
    let map = MapOptions::new().map_path(&path)?;
    let me = mman::maps::read(None)?;
    let total = me.total();
    outln!(
        "this process has {} mappings: {} KiB virtual, {} KiB resident (RSS), {} KiB PSS",
        me.regions.len(),
        total.size,
        total.rss,
        total.pss
    )?;
    if let Some(r) = me.regions.iter().find(|r| r.start == map.as_ptr() as u64) {
        outln!(
            "the file, mapped just now: {:#x}-{:#x} {} {} KiB, {} KiB resident before any touch",
            r.start,
            r.end,
            r.perms,
            r.usage.size,
            r.usage.rss
        )?;
    }
    outln!("(`mman cache status|touch|evict|lock` and `mman maps PID` do this from the shell.)")?;
    Ok(())
}

/// `mman __tour-child WHAT`: the throwaway processes the tour demonstrates with.
pub fn child(what: &str) -> Result<()> {
    match what.split_once(':').unwrap_or((what, "")) {
        ("protect-write", _) => {
            let mut map = MapOptions::new().len(mman::page_size()).map_anonymous()?;
            map.protect(Protection::READ)?;
            let p = map.as_mut_ptr();
            // SAFETY: deliberately unsound for the demonstration: this throwaway child writes
            // to a read-only page so the kernel kills it with SIGSEGV.
            unsafe { std::ptr::write_volatile(p, 1) };
            bail!("the write to a read-only page was not stopped")
        }
        ("channel-echo", base) => channel::echo(base),
        ("file-writer", path) => {
            let map = MapOptions::new().read_write().shared().map_path(path)?;
            map.atomic_u64(0)?
                .store(0x00C0_FFEE_u64, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        ("guard-overflow", _) => {
            let mut buf = mman::fault::GuardedBuffer::new(100)?;
            let p = buf.as_mut_ptr();
            // SAFETY: deliberately out of bounds for the demonstration: the byte past the end
            // is in the guard page, and the fault kills this throwaway child.
            unsafe { std::ptr::write_volatile(p.add(100), 1) };
            bail!("the guard page did not stop the overflow")
        }
        _ => bail!("unknown tour child {what:?}"),
    }
}
