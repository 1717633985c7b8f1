//! The course notes' persistent variable: a page that lives in `.persistent_data`. Without
//! arguments it prints the page up to the first NUL; with `-write` it stores standard input
//! (at most a page). Safe by default (`Persistent`, read and written by copy); `-fixed` is
//! the notes' own form, `persist()` mapping the file MAP_FIXED over a page-aligned global.
//!
//! `echo hello | cargo run --example persist -- -write; cargo run --example persist`

use std::io::{Read, Write};
use std::process::ExitCode;

use mman::persist::{persist_fixed, Persistent};

const PAGE: usize = 4096;
const FILE: &str = ".persistent_data";

/// The notes' `char persistent_data[PGSIZE] __attribute__((aligned(PGSIZE)))`.
#[repr(C, align(4096))]
struct Page([u8; PAGE]);
static mut PERSISTENT_DATA: Page = Page([0; PAGE]);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let write = args.iter().any(|a| a == "-write");
    let fixed = args.iter().any(|a| a == "-fixed");
    match run(write, fixed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("persist: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(write: bool, fixed: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut input = Vec::new();
    if write {
        std::io::stdin().take(PAGE as u64 + 1).read_to_end(&mut input)?;
        if input.len() > PAGE {
            return Err("standard input holds more than a page; nothing stored".into());
        }
    }
    let mut page = [0u8; PAGE];
    page[..input.len()].copy_from_slice(&input);
    if fixed {
        let addr = std::ptr::addr_of_mut!(PERSISTENT_DATA).cast::<u8>();
        // SAFETY: PERSISTENT_DATA is page-aligned, exactly a page, and used only through raw
        // pointers in this single-threaded program; no reference to it lives across the
        // call, so replacing its pages with the file's is ours to do.
        let _map = unsafe { persist_fixed(FILE, addr, PAGE) }?;
        if write {
            // SAFETY: the page is mapped from the file (above). A plain copy, no reference: this
            // program vouches, as the notes' C does, that no other process writes the file
            // meanwhile (the safe form above needs no such promise).
            unsafe { std::ptr::copy_nonoverlapping(page.as_ptr(), addr, PAGE) };
        } else {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(addr, page.as_mut_ptr(), PAGE) };
        }
        // `_map` stays alive to the end, keeping the file mapped over the global.
    } else {
        let data = Persistent::<[u8; PAGE]>::open(FILE)?;
        if write {
            data.set(&page)?;
            data.flush()?;
        } else {
            page = data.get()?;
        }
    }
    if !write {
        let end = page.iter().position(|&b| b == 0).unwrap_or(PAGE);
        std::io::stdout().write_all(&page[..end])?;
    }
    Ok(())
}
