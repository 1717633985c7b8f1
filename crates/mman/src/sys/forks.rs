//! Telling a process from a child created by `fork`: a counter that `pthread_atfork` bumps
//! in every child. Used by the robust mutex (thread identities cached before a fork are
//! stale), the channels (descriptors and registrations that belong to the parent) and
//! `fault::Secret` (memory withheld from children is not mapped in them).

use std::sync::atomic::{AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: one atomic add. Every thread identity cached before the fork is
    // now stale (the child's one thread has a new TID).
    FORKS.fetch_add(1, Ordering::Relaxed);
    // Async-signal-safe too: atomic swaps and close(2).
    #[cfg(feature = "channel")]
    super::liveness::close_all_in_child();
}

/// Before a fork, in the forking thread: with channels, wait until no thread is between
/// opening a lock's descriptor and registering it (see `liveness`).
extern "C" fn before_fork() {
    #[cfg(feature = "channel")]
    super::liveness::before_fork();
}

/// After a fork, in the parent.
extern "C" fn after_fork_in_parent() {
    #[cfg(feature = "channel")]
    super::liveness::after_fork_in_parent();
}

/// Register the fork handlers (once per process).
pub(super) fn watch() {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers handlers that only add to an atomic (and, with channels, wait
        // for the liveness table's registrations before a fork, and close descriptors in
        // the child); no other effect.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
    });
}

/// How many times this process's ancestry forked since the watch began: a value that
/// changes in a child created by `fork`. An object that records it can tell that it was
/// inherited by a fork (and no longer belongs to the process it was made for) with one
/// relaxed load. (A child made by a raw `clone` system call, which runs no `atfork`
/// handler, is not counted: pair it with the PID where that matters.)
pub fn generation() -> u64 {
    watch();
    FORKS.load(Ordering::Relaxed)
}
