//! The course notes' second example: the dining philosophers as processes, the forks as
//! semaphores in shared memory. Each philosopher takes the lower-numbered fork first, so
//! there is no cycle of waiting and no deadlock; each eats its meals and leaves.
//!
//! `cargo run --example philosophers -- [N] [MEALS]`

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use mman::sync::{place, Semaphore};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let n = args.next().unwrap_or(Ok(5));
    let meals = args.next().unwrap_or(Ok(1000));
    let (Ok(n @ 2..=64), Ok(meals @ 1..)) = (n, meals) else {
        eprintln!("philosophers: usage: philosophers [N 2..=64] [MEALS >= 1]");
        return ExitCode::FAILURE;
    };
    // N forks (8-byte semaphores), then N meal counters.
    let table = match mman::shm::anonymous(16 * n) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("philosophers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let fork = |i: usize| place::<Semaphore>(&table, 8 * (i % n));
    for i in 0..n {
        if fork(i).and_then(|f| f.post()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    let mut children = Vec::new();
    for i in 0..n {
        // SAFETY: one thread, so the child may run ordinary code after fork.
        match unsafe { libc::fork() } {
            0 => {
                let (a, b) = (i.min((i + 1) % n), i.max((i + 1) % n));
                let (Ok(first), Ok(second), Ok(eaten)) = (fork(a), fork(b), table.atomic_u64(8 * n + 8 * i))
                else {
                    // SAFETY: end the child at once.
                    unsafe { libc::_exit(1) }
                };
                for _ in 0..meals {
                    first.wait();
                    second.wait();
                    eaten.fetch_add(1, Ordering::Relaxed);
                    let _ = second.post();
                    let _ = first.post();
                }
                // SAFETY: end the child without running the parent's exit handlers.
                unsafe { libc::_exit(0) }
            }
            -1 => {
                eprintln!("philosophers: fork: {}", std::io::Error::last_os_error());
                return ExitCode::FAILURE;
            }
            pid => children.push(pid),
        }
    }
    let mut ok = true;
    for pid in children {
        let mut status = 0;
        // SAFETY: wait for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        ok &= status == 0;
    }
    for i in 0..n {
        let m = table.load::<u64>(8 * n + 8 * i).unwrap_or(0);
        println!("philosopher {i} ate {m} meals");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
