//! Tour sections 11 and 12: faults made safe: a file truncated under a mapping, guard pages
//! and locked secrets.

use std::os::unix::process::ExitStatusExt;

use anyhow::{bail, Result};
use mman::MapOptions;

use super::Tour;

pub(super) fn truncation(t: &Tour) -> Result<()> {
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

pub(super) fn guards_and_secrets(t: &Tour) -> Result<()> {
    let out = t.mman_killed(&["__tour-child", "guard-overflow"], libc::SIGSEGV)?;
    let said = String::from_utf8_lossy(&out.stderr);
    if !said.contains("guard page hit") {
        bail!(
            "the guarded child died without naming the guard page: {:?}",
            said.trim()
        );
    }
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
