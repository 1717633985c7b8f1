//! What the integration tests share: re-running this test binary as a child process, for
//! behaviour that needs a process of its own (a signal, a fork, a peer). The child runs only
//! the named test (`--exact`), which sees its role in [`role`] and acts; in the parent,
//! where no role is set, such a test returns at once.

// Each test binary uses only some of these.
#![allow(dead_code)]

use std::process::Command;

/// The environment variable carrying the role of a re-run test binary.
const ROLE: &str = "MMAN_TEST_ROLE";

/// This test binary, to run only `test`, playing `role`.
pub fn rerun(test: &str, role: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("the test binary's path"));
    c.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE, role);
    c
}

/// The role this process was re-run to play, if it was.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Whether this process was re-run to play `role`.
pub fn is(role: &str) -> bool {
    std::env::var(ROLE).as_deref() == Ok(role)
}

/// A page of shared anonymous memory (as a forked child would share it).
pub fn shared_page() -> mman::Mapping {
    mman::MapOptions::new()
        .len(4096)
        .read_write()
        .shared()
        .map_anonymous()
        .unwrap()
}

/// The text of a caught panic.
pub fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Run `f`, failing the test (with the panic's text) if it panics: a peer's garbage made
/// the `who` panic.
pub fn without_panic<T>(who: &str, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| panic!("a peer's garbage panicked the {who}: {}", panic_text(p)))
}
