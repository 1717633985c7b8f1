//! The course notes' "mmap() & shared semaphores": a semaphore lives in the shared page
//! beside ten integers; the child fills them in and posts, the parent waits and prints.
//! With `-private` the child's writes and post stay in its own copy: the parent waits in
//! vain (here for one second, where the C program waits forever).
//!
//! `cargo run --example semaphore [-- -private]`

use std::process::ExitCode;
use std::time::Duration;

use mman::sync::{place, Semaphore};

fn main() -> ExitCode {
    let private = std::env::args().nth(1).as_deref() == Some("-private");
    let size = mman::page_size();
    let map = if private {
        mman::shm::anonymous_private(size)
    } else {
        mman::shm::anonymous(size)
    };
    let map = match map {
        Ok(m) => m,
        Err(e) => {
            eprintln!("semaphore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(sem) = place::<Semaphore>(&map, 0) else {
        return ExitCode::FAILURE;
    };
    let ints = 8; // the ten i32s follow the 8-byte semaphore
                  // SAFETY: this program has one thread, so the child may run ordinary code after fork.
    match unsafe { libc::fork() } {
        0 => {
            for i in 0..10 {
                let _ = map.store(ints + 4 * i, &(i as i32));
            }
            let _ = sem.post();
            // SAFETY: end the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        -1 => {
            eprintln!("semaphore: fork: {}", std::io::Error::last_os_error());
            ExitCode::FAILURE
        }
        _ => {
            if !sem.wait_timeout(Duration::from_secs(1)) {
                println!("no post arrived: the child's copy of the page is not ours");
                return ExitCode::SUCCESS;
            }
            let nums: Vec<String> = (0..10)
                .map(|i| {
                    map.load::<i32>(ints + 4 * i)
                        .map_or("?".into(), |v| v.to_string())
                })
                .collect();
            println!("{}", nums.join(" "));
            ExitCode::SUCCESS
        }
    }
}
