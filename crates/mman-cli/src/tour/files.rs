//! Tour sections 13 and 14: files beyond one process: persistent variables, and the page
//! cache that stands between files and their mappings.

use std::io::Write;
use std::process::Command;

use anyhow::{bail, Context, Result};
use mman::MapOptions;

use super::Tour;

pub(super) fn persistence(t: &Tour) -> Result<()> {
    let page = t.path("persistent_data");
    let page_s = page.to_string_lossy().into_owned();
    let mut w = crate::cleanup::spawn(
        Command::new(&t.exe)
            .args(["persist", "--write", "--file", &page_s])
            .stdin(std::process::Stdio::piped()),
    )
    .context("run mman persist --write")?;
    const LINE: &str = "written by one process, read by the next";
    // A writer that failed early has closed its end: its status says why, not the EPIPE.
    let fed = w
        .stdin
        .take()
        .context("persist: stdin")?
        .write_all(LINE.as_bytes());
    let status = w.wait()?;
    if !status.success() {
        bail!("mman persist --write {}", crate::cleanup::how(status));
    }
    fed.context("feed mman persist --write")?;
    let r = t.mman(&["persist", "--read", "--file", &page_s])?;
    let read = String::from_utf8_lossy(&r.stdout);
    if read != LINE {
        bail!("mman persist --read gave {read:?}, not the line written: {LINE:?}");
    }
    outln!("process 1 stored a line in a 4096-byte page that IS the file (MAP_SHARED):")?;
    outln!("process 2 mapped the same file and read: {read:?}")?;
    let counter = t.path("counter");
    let c = counter.to_string_lossy().into_owned();
    t.mman(&["counter", "--add", "100000", "--file", &c])?;
    t.mman(&["counter", "--add", "100", "--durable", "--file", &c])?;
    let n = t.mman(&["counter", "--check", "--file", &c])?;
    let value = String::from_utf8_lossy(&n.stdout).trim().to_string();
    if value.is_empty() {
        bail!("mman counter --check printed nothing");
    }
    outln!(
        "a Durable<T> counter: 100000 process-crash-safe and 100 durable transactions later it reads {value}"
    )?;
    outln!("each commit writes the inactive of two checksummed copies; a kill or a power loss mid-way")?;
    outln!("leaves the previous value, never a torn one.")?;
    Ok(())
}

pub(super) fn page_cache(t: &Tour) -> Result<()> {
    use mman::cache::{CachedFile, DirtyPages, PageRange};
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
    f.evict(PageRange::ALL, DirtyPages::WriteBackFirst)?;
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
