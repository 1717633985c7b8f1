//! The course notes' mmap `cat` (CS 3214, "mmap() for file I/O") in safe Rust: map the file
//! named on the command line and write it to standard output.
//!
//! `cargo run --example mmap_cat -- FILE`

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: mmap_cat FILE");
        return ExitCode::FAILURE;
    };
    // Map the whole file read-only; the kernel copies it out with write(2).
    let result = mman::MapOptions::new()
        .map_path(&path)
        .and_then(|map| map.write_to(std::io::stdout(), ..));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmap_cat: {e}");
            ExitCode::FAILURE
        }
    }
}
