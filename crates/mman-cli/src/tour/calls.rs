//! Tour sections 1 to 5: the calls of the course notes one by one: mmap (a file read
//! through a mapping; private and shared mappings), mprotect, mlock and mlockall, msync.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use anyhow::{bail, Result};
use mman::{FlushMode, LockAll, MapOptions, Protection};

use super::Tour;

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

pub(super) fn map_a_file(t: &Tour) -> Result<()> {
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

pub(super) fn private_vs_shared(t: &Tour) -> Result<()> {
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

pub(super) fn protection(t: &Tour) -> Result<()> {
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
    let out = t.mman_killed(&["__tour-child", "protect-write"], libc::SIGSEGV)?;
    let sig = out.status.signal().unwrap_or_default();
    outln!("a child that writes to a read-only page with a raw pointer is killed by signal {sig} (SIGSEGV)")?;
    Ok(())
}

pub(super) fn locking(_: &Tour) -> Result<()> {
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
    match mman::lock_all(LockAll::CURRENT | LockAll::ON_FAULT) {
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

pub(super) fn syncing(t: &Tour) -> Result<()> {
    let path = t.path("journal");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.set_len(4 << 20)?;
    let map = MapOptions::new().read_write().shared().map(&file)?;
    // set_len leaves a hole: back it now, so a full disk is an error here and not a write
    // through the mapping that the file system cannot take.
    map.allocate(..)?;
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
    // Magic numbers are 32 bits; f_type is a signed int on 32-bit glibc targets, where
    // ramfs's (high bit set) is negative: only the low 32 bits are compared.
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u64 as u32;
    matches!(magic, TMPFS_MAGIC | RAMFS_MAGIC)
}
