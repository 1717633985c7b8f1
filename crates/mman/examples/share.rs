//! The course notes' parent/child program ("mmap() for parent/child communication") in
//! Rust: a child created by fork writes 0..9 into an anonymous mapping; the parent waits and
//! prints what it sees. `-private` maps MAP_PRIVATE, and the parent sees zeros.
//!
//! `cargo run --example share [-- -private]`

use std::process::ExitCode;

fn main() -> ExitCode {
    let private = std::env::args().nth(1).as_deref() == Some("-private");
    let map = if private {
        mman::shm::anonymous_private(mman::page_size())
    } else {
        mman::shm::anonymous(mman::page_size())
    };
    let map = match map {
        Ok(m) => m,
        Err(e) => {
            eprintln!("share: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Memory mapped at {:p}", map.as_ptr());
    // SAFETY: this program has one thread, so the child may run ordinary code after fork.
    match unsafe { libc::fork() } {
        0 => {
            for i in 0..10 {
                let _ = map.store(4 * i, &(i as i32));
            }
            // SAFETY: end the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        -1 => {
            eprintln!("share: fork: {}", std::io::Error::last_os_error());
            ExitCode::FAILURE
        }
        pid => {
            let mut status = 0;
            // SAFETY: wait for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let nums: Vec<String> = (0..10)
                .map(|i| map.load::<i32>(4 * i).map_or("?".into(), |v| v.to_string()))
                .collect();
            println!("{}", nums.join(" "));
            ExitCode::SUCCESS
        }
    }
}
