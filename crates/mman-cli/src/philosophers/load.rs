//! Whether other processes want the CPUs the dinner runs on: what decides whether the fair
//! philosophers may run `SCHED_BATCH` (see `not_preempted_by_wakers` in the parent module).
//!
//! From inside a philosopher a busy machine looks like its own table's time-sharing (the
//! naps last as long either way). From the parent it does not: the CPU time the table's CPUs
//! spent busy (`/proc/stat`), minus what the philosophers and the parent spent
//! (`/proc/PID/schedstat`, in nanoseconds), is what every other process took. The parent
//! measures it over a short window before it opens the gate ([`FIRST_WINDOW`]), and again
//! over every [`window`] of the dinner, and posts the verdict in the table's load word,
//! which the philosophers follow at their looks at the table.
//!
//! Everything here is a hint for speed: a wrong verdict costs meals per second (5-9% on an
//! idle machine, or most of them beside CPU-bound load), never a meal or the dinner's end;
//! a figure that cannot be read gives no verdict, and the last one stands.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cleanup::Tracked;

/// The first window, before the gate opens: long enough that the `/proc/stat` counters,
/// in clock ticks (10 ms), are not all rounding (within 0.15 CPU at 2 CPUs); short enough
/// to be no wait worth the name at the start of a dinner.
pub const FIRST_WINDOW: Duration = Duration::from_millis(150);

/// The window of each later verdict, during the dinner (within 0.04 CPU at 2 CPUs); longer
/// at a large table (1 ms a philosopher), whose `/proc/PID/schedstat` files the parent reads
/// each time (about 10 µs each).
pub fn window(n: usize) -> Duration {
    Duration::from_millis(500).max(Duration::from_millis(n as u64))
}

/// Other processes taking this much of the table's CPUs (in CPUs) make the philosophers
/// leave `SCHED_BATCH`: a napper woken as a batch task cannot preempt them and waits out
/// their time slices. Low, because what batch gains on an idle table is a few percent and
/// what it loses beside load is most of the dinner; above the rounding of a first window and
/// the background of a quiet machine (0.00-0.09 CPU here, with the project's other work
/// going on lightly beside it).
pub const BUSY_FROM: f64 = 0.25;
/// ... and this little lets them take it up again: below what two CPU-bound processes still
/// get beside 16 philosophers running `SCHED_OTHER` on 2 CPUs (0.25 CPU, measured), so a
/// loaded machine does not flip back and forth.
pub const IDLE_BELOW: f64 = 0.10;

/// The verdict from the CPUs other processes took (`others`, in CPUs) and the current one:
/// batch or not, with a gap between the two thresholds so that a figure near one of them
/// does not flip the table at every window.
pub fn batch(batch_now: bool, others: f64) -> bool {
    if batch_now {
        others < BUSY_FROM
    } else {
        others < IDLE_BELOW
    }
}

/// The parent's watch on the machine for a fair dinner: at each look it reads the machine,
/// judges the window since the last reading, and posts the verdict in the table's load word
/// (0: batch) when it changes.
pub struct Watch {
    /// When the last reading was taken (or the watch started).
    pub since: Instant,
    last: Option<Sample>,
    batch: bool,
}

impl Watch {
    /// Start watching: the first reading, before any philosopher exists.
    pub fn start() -> Watch {
        Watch {
            since: Instant::now(),
            last: Sample::take(&[]),
            batch: true,
        }
    }

    /// Read the machine again and post the verdict on the window since in `word`.
    pub fn look(&mut self, word: &AtomicU64, children: &[Option<Tracked>]) {
        let pids: Vec<u32> = children.iter().flatten().map(|c| c.id()).collect();
        let now = Sample::take(&pids);
        let others = self
            .last
            .as_ref()
            .zip(now.as_ref())
            .and_then(|(a, b)| a.others_until(b));
        if let Some(others) = others {
            let batch = batch(self.batch, others);
            if batch != self.batch {
                word.store(u64::from(!batch), Ordering::Relaxed);
                self.batch = batch;
            }
        }
        (self.since, self.last) = (Instant::now(), now);
    }
}

/// One reading of the machine: when, the idle time of the table's CPUs (clock ticks), and
/// the CPU time of the philosophers (by pid) and of the parent (nanoseconds).
pub struct Sample {
    at: Instant,
    cpus: usize,
    idle_ticks: u64,
    mine_ns: u64,
    children: Vec<(u32, u64)>,
}

impl Sample {
    /// Read it now, for the philosophers `pids`; None when `/proc` does not tell.
    pub fn take(pids: &[u32]) -> Option<Sample> {
        let mask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| allowed_cpus(&s))?;
        let (cpus, idle_ticks) = idle(&std::fs::read_to_string("/proc/stat").ok()?, &mask)?;
        let mine_ns = run_ns(Path::new("/proc/self/schedstat"))?;
        let children = pids
            .iter()
            .filter_map(|&p| {
                Some((
                    p,
                    run_ns(&Path::new("/proc").join(p.to_string()).join("schedstat"))?,
                ))
            })
            .collect();
        Some(Sample {
            at: Instant::now(),
            cpus,
            idle_ticks,
            mine_ns,
            children,
        })
    }

    /// The CPUs other processes took on the table's CPUs between `self` and the later
    /// `now`; None when the two do not compare: no time between them, the CPUs changed, or
    /// a philosopher in `self` was not read in `now` (it left, and its time with it). A
    /// philosopher read in `now` only (started since, or not read before) counts with all
    /// its time: never less than its time in the window, so an error leans to batch.
    pub fn others_until(&self, now: &Sample) -> Option<f64> {
        let secs = now.at.checked_duration_since(self.at)?.as_secs_f64();
        if secs <= 0.0 || now.cpus != self.cpus {
            return None;
        }
        let mut before = 0u64;
        for &(pid, ns) in &self.children {
            now.children.iter().find(|c| c.0 == pid)?;
            before = before.saturating_add(ns);
        }
        let after = now.children.iter().fold(0u64, |s, c| s.saturating_add(c.1));
        let ours_ns = now
            .mine_ns
            .checked_sub(self.mine_ns)?
            .saturating_add(after.checked_sub(before)?);
        let tick = rustix::param::clock_ticks_per_second().max(1) as f64;
        let idle = now.idle_ticks.checked_sub(self.idle_ticks)? as f64 / tick;
        Some(others(secs, self.cpus, idle, ours_ns as f64 / 1e9))
    }
}

/// The CPUs other processes took over `secs` on `cpus` CPUs that were idle `idle` seconds in
/// all and ran the dinner `ours` seconds: what remains of the time, per second, at least 0.
pub fn others(secs: f64, cpus: usize, idle: f64, ours: f64) -> f64 {
    ((secs * cpus as f64 - idle - ours) / secs).max(0.0)
}

/// The CPUs of a `Cpus_allowed_list:` line of `/proc/PID/status` ("0-3,8,10-11").
pub fn allowed_cpus(status: &str) -> Option<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let c: usize = part.trim().parse().ok()?;
                (c, c)
            }
        };
        // Bounded: a list is read from the kernel, but a range is never taken on trust.
        if hi < lo || hi - lo > 65_536 {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// From `/proc/stat`: how many of the CPUs `mask` it lists, and the ticks they spent idle,
/// waiting for I/O, or stolen by a hypervisor (none of which another process of this machine
/// took from the dinner).
pub fn idle(stat: &str, mask: &[usize]) -> Option<(usize, u64)> {
    let (mut cpus, mut ticks) = (0usize, 0u64);
    for line in stat.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(cpu) = f
            .next()
            .and_then(|c| c.strip_prefix("cpu"))
            .and_then(|c| c.parse::<usize>().ok())
        else {
            continue;
        };
        if !mask.contains(&cpu) {
            continue;
        }
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        // user nice system idle iowait irq softirq steal ...
        let field = |i: usize| v.get(i).copied().unwrap_or(0);
        ticks = ticks
            .saturating_add(field(3))
            .saturating_add(field(4))
            .saturating_add(field(7));
        cpus += 1;
    }
    (cpus > 0).then_some((cpus, ticks))
}

/// The time a task has run, in nanoseconds: the first figure of its `schedstat`.
fn run_ns(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_leaves_batch_beside_load_and_takes_it_up_again_when_it_is_gone() {
        // Idle machine (background only): batch stays.
        assert!(batch(true, 0.0));
        assert!(batch(true, 0.02));
        // Two CPU-bound processes beside the table: 0.7-2 CPUs, batch is left.
        assert!(!batch(true, 0.7));
        assert!(!batch(true, 2.0));
        assert!(!batch(true, BUSY_FROM));
        // Once left, the load must fall well below the threshold that made it leave:
        // two spinners held to 0.25 CPU by 16 philosophers keep the table off batch.
        assert!(!batch(false, 0.25));
        assert!(!batch(false, 0.15));
        assert!(batch(false, 0.05));
        // Nothing between the two thresholds changes the verdict either way.
        for x in [IDLE_BELOW, 0.15, 0.2, BUSY_FROM - 0.01] {
            assert!(batch(true, x) && !batch(false, x), "{x}");
        }
    }

    #[test]
    fn others_are_what_the_table_and_the_idle_time_leave() {
        // 2 CPUs for 0.5 s: 1 CPU-second. Idle 0.1 s, the dinner 0.85 s: 0.05 s others.
        assert!((others(0.5, 2, 0.1, 0.85) - 0.1).abs() < 1e-9);
        // Two spinners: no idle, the dinner half the time.
        assert!((others(1.0, 2, 0.0, 1.0) - 1.0).abs() < 1e-9);
        // Rounding may make the sum exceed the time: never below 0.
        assert_eq!(others(0.15, 2, 0.2, 0.15), 0.0);
    }

    #[test]
    fn proc_texts_are_read_for_the_allowed_cpus_only() {
        let status = "Name:\tmman\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1,4\n";
        assert_eq!(allowed_cpus(status), Some(vec![0, 1, 4]));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t1\n"), Some(vec![1]));
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t3-1\n"), None);
        assert_eq!(allowed_cpus("Cpus_allowed_list:\t0-99999999\n"), None);
        assert_eq!(allowed_cpus("Cpus_allowed_list:\tx\n"), None);
        assert_eq!(allowed_cpus("Name: mman\n"), None);
        let stat = "cpu  10 0 10 500 5 0 0 1 0 0\n\
                    cpu0 5 0 5 200 2 0 0 1 0 0\n\
                    cpu1 5 0 5 300 3 0 0 0 0 0\n\
                    intr 123\nctxt 456\n";
        // The aggregate line is not a CPU; each listed CPU's idle + iowait + steal.
        assert_eq!(idle(stat, &[0, 1]), Some((2, 506)));
        assert_eq!(idle(stat, &[1]), Some((1, 303)));
        assert_eq!(idle(stat, &[2]), None);
        // Short or garbled lines count what they have.
        assert_eq!(idle("cpu0 1 2 3 4\n", &[0]), Some((1, 4)));
    }
}
