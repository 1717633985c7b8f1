//! Tour sections 7 to 10: processes sharing memory: parent and child, a semaphore in the
//! mapping, two unrelated processes, the dining philosophers.

use anyhow::{bail, Result};
use mman::MapOptions;

use super::Tour;

pub(super) fn sharing(t: &Tour) -> Result<()> {
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

pub(super) fn semaphore(t: &Tour) -> Result<()> {
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

pub(super) fn file_between_processes(t: &Tour) -> Result<()> {
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

pub(super) fn philosophers(t: &Tour) -> Result<()> {
    let out = t.mman(&["philosophers", "-n", "5", "--seconds", "0.5", "--greedy"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    outln!("five philosopher processes, forks as semaphores in a MAP_SHARED file, half a second, no rule at the table (--greedy):")?;
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
    let fair = t.mman(&["philosophers", "-n", "5", "--seconds", "0.5"])?;
    let fair = String::from_utf8_lossy(&fair.stdout);
    outln!("the dinner as mman serves it by default (whoever gets 2% ahead of the hungriest waits for it, asleep):")?;
    if let Some(summary) = fair.lines().last() {
        outln!("  {summary}")?;
    }
    Ok(())
}
