//! Tour section 6: when mmap pays, measured: read() vs a mapping vs vmsplice vs splice.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use mman::transfer::{Method, Sink};
use mman::Usage;

use super::Tour;

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

pub(super) fn when_mmap_pays(t: &Tour) -> Result<()> {
    const LEN: usize = 128 << 20;
    let path = t.path("big");
    make_file(&path, LEN)?;
    let _ = std::fs::read(&path)?; // warm the page cache: we measure the CPU side
    outln!("moving a 128 MiB file (in the page cache) into a pipe, each way in turn:")?;
    outln!(
        "  {:<40} {:>9} {:>9} {:>13}",
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
            "  {label:<40} {secs:>9.3} {:>9.2} {:>13}",
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
