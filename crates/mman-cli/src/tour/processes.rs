//! Tour sections 7 to 10: processes sharing memory: parent and child, a semaphore in the
//! mapping, two unrelated processes, the dining philosophers.

use anyhow::{bail, Result};
use mman::MapOptions;

use super::Tour;

pub(super) fn sharing(t: &Tour) -> Result<()> {
    for args in [&["share"][..], &["share", "--private"][..]] {
        let out = t.mman(args)?;
        let lines = super::lines_of(&out, &format!("mman {}", args.join(" ")), 2)?;
        let (addr, numbers) = (&lines[0], &lines[1]);
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
    let lines = super::lines_of(&out, "mman semaphore", 1)?;
    outln!(
        "the parent waits on a semaphore that lives in the shared page; the child fills the numbers and posts: {}",
        lines.join(" ")
    )?;
    outln!(
        "mman's Semaphore is one 8-byte word: the count, a flag for sleepers, and the number of waiters that starve."
    )?;
    outln!(
        "a waiter spins only where a poster on another CPU can answer, yields to one on its own CPU, then sleeps on a"
    )?;
    outln!(
        "futex (mman::sync::Wait::Adaptive; this process may use {} CPU(s)).",
        mman::sync::usable_cpus()
    )?;
    Ok(())
}

pub(super) fn file_between_processes(t: &Tour) -> Result<()> {
    let path = t.path("shared-file");
    std::fs::write(&path, vec![0u8; 4096])?;
    let map = MapOptions::new().read_write().shared().map_path(&path)?;
    let word = map.atomic_u64(0)?;
    let path_s = path.to_string_lossy().into_owned();
    t.mman(&["__tour-child", &format!("file-writer:{path_s}")])?;
    outln!(
        "a separate process (started, not forked) mapped {} MAP_SHARED and stored a value;\nwe read it through our own mapping of the same file: {:#x}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        word.load(std::sync::atomic::Ordering::SeqCst)
    )?;
    Ok(())
}

pub(super) fn philosophers(t: &Tour) -> Result<()> {
    let out = t.mman(&["philosophers", "-n", "5", "--seconds", "0.5", "--greedy"])?;
    let summary = dinner_summary(&out)?;
    outln!("five philosopher processes, forks as semaphores in a MAP_SHARED file, half a second, no rule at the table (--greedy):")?;
    outln!("  {summary}")?;
    outln!("each takes the lower-numbered fork first: no cycle of waiting, so no deadlock.")?;
    let fairness = summary
        .rsplit_once('(')
        .and_then(|(_, f)| f.trim_end_matches(')').parse::<f64>().ok());
    if let Some(f) = fairness.filter(|f| *f < 0.5) {
        outln!(
            "that rules out deadlock, not starvation: the hungriest ate {f:.2} of what the best-fed did. Semaphores"
        )?;
        outln!("promise no order: a philosopher still running takes its forks back before a sleeping neighbour wakes (for up to a millisecond).")?;
    }
    let fair = t.mman(&["philosophers", "-n", "5", "--seconds", "0.5"])?;
    let summary = dinner_summary(&fair)?;
    outln!("the dinner as mman serves it by default (whoever gets 2% ahead of the hungriest waits for it, asleep):")?;
    outln!("  {summary}")?;
    Ok(())
}

/// The last line of `mman philosophers`, its summary ("total N meals in ..."), or an error.
fn dinner_summary(out: &std::process::Output) -> Result<String> {
    let lines = super::lines_of(out, "mman philosophers", 1)?;
    let last = lines[lines.len() - 1].clone();
    if !last.starts_with("total ") {
        bail!("mman philosophers ended without its summary line: {last:?}");
    }
    Ok(last)
}
