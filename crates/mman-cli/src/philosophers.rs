//! `mman philosophers`: the dining philosophers as processes, the forks semaphores in a
//! shared file; and the hidden `__philosopher` each process runs.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use mman::sync::{place, Barrier, Semaphore};
use mman::{MapOptions, Mapping};

use crate::cleanup::Tracked;

mod file;
mod load;

use file::prepare_table;

// Arguments of `mman philosophers` (a plain comment: as a doc comment it would replace the
// subcommand's about text, the arguments being added last, see `Command` in main.rs).
#[derive(Args, Debug)]
pub struct PhilosophersArgs {
    /// Number of philosophers (processes), 2 to 1024.
    #[arg(short = 'n', long, default_value_t = 5, value_parser = crate::args::philosophers)]
    philosophers: u32,
    /// Meals each philosopher eats (at least 1), then the dinner ends.
    #[arg(long, conflicts_with = "seconds", value_parser = crate::args::positive)]
    meals: Option<u64>,
    /// Run the dinner this long instead, in seconds (above 0, at most a year; default 2 s
    /// when --meals is not given).
    #[arg(long, value_parser = crate::args::seconds)]
    seconds: Option<f64>,
    /// A greedy dinner: no rule at the table, the forks' own order only. A philosopher still
    /// running takes its forks straight back while a sleeping neighbour is waking up (until
    /// the neighbour has waited a millisecond): the most meals, but no promise of fairness.
    /// Without it the dinner is fair: a philosopher that has eaten 2% more than the hungriest
    /// at the table (0.5% at a table of 2 or 3) waits, asleep, until the hungriest has caught
    /// up.
    #[arg(long)]
    greedy: bool,
    /// The fair dinner, which is the default (kept so scripts that ask for it still work).
    #[arg(long, hide = true, conflicts_with = "greedy")]
    fair: bool,
    /// The file holding the forks (semaphores), mapped MAP_SHARED by every philosopher.
    /// Default: a temporary file, removed at the end.
    #[arg(long)]
    file: Option<PathBuf>,
}

/// The table in the shared file: a stop flag, the table's mark, the gate and the load word,
/// then N forks, then N meal counters, each on a cache line of its own.
struct Table {
    map: Mapping,
    n: usize,
}

const STOP_AT: usize = 0;
/// Where the table's mark sits: an existing file is used only if it carries it.
const MAGIC_AT: usize = 8;
const MAGIC: u64 = u64::from_le_bytes(*b"MMANPHIL");
/// The gate (a `Barrier` for the philosophers and the parent): every philosopher waits at it
/// until all are seated and the parent has come too; then all go at once and the dinner's
/// clock starts. Without it the first philosophers ate while the last were still being
/// started (1,024 processes take seconds to start): a "2 s" dinner ran 7.5 s and ended with
/// fairness 0. (A semaphore with a permit posted for each would hand the wake-ups on one by
/// one: the last philosopher sat down a second late.)
const GATE_AT: usize = 16;
/// The load word, after the gate (24 bytes): 0 while the table's CPUs are the dinner's alone,
/// otherwise whatever else wants them (see [`not_preempted_by_wakers`]). The parent writes it,
/// the fair philosophers read it at their looks at the table. Garbage in it changes how they
/// are scheduled, nothing else.
const LOAD_AT: usize = 48;
/// How long the parent waits, once every philosopher is started, for all to sit down; then it
/// ends every philosopher (the gate is shared memory, and garbage in it must not keep a
/// dinner of fixed meals waiting for good).
const GATE_PATIENCE: Duration = Duration::from_secs(30);
/// How long a philosopher waits at the gate before it sits down anyway: far longer than the
/// parent's [`GATE_PATIENCE`], which counts from the last start (starting a thousand
/// processes can take a while), after which the parent ends them all; a bound all the same,
/// for a philosopher whose parent is gone some way its death signal did not cover.
const SEATED_PATIENCE: Duration = Duration::from_secs(600);
/// How long the parent waits, once it has raised the stop flag, for every philosopher to
/// leave the table; then it ends them and reports it. A philosopher sees the flag at its next
/// meal, within microseconds at an undisturbed table.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
const FORKS_AT: usize = 64;
/// The bytes of one fork (a `Semaphore`) and of one meal counter: a cache line each, so a
/// philosopher's fork or counter never shares a line with another's (false sharing would
/// make two philosophers on two cores slow each other down when they touch nothing in
/// common).
const LINE: usize = 64;
const FORK: usize = LINE;

impl Table {
    fn size(n: usize) -> usize {
        FORKS_AT + n * FORK + n * LINE
    }
    fn open(path: &std::path::Path, n: usize) -> Result<Table> {
        let map = MapOptions::new()
            .read_write()
            .shared()
            .len(Self::size(n))
            .map_path(path)?;
        Ok(Table { map, n })
    }
    fn stop(&self) -> Result<&AtomicU64> {
        Ok(self.map.atomic_u64(STOP_AT)?)
    }
    fn gate(&self) -> Result<&Barrier> {
        Ok(Barrier::open(&self.map, GATE_AT, self.n as u32 + 1)?)
    }
    fn fork(&self, i: usize) -> Result<&Semaphore> {
        Ok(place(&self.map, FORKS_AT + FORK * (i % self.n))?)
    }
    fn load(&self) -> Result<&AtomicU64> {
        Ok(self.map.atomic_u64(LOAD_AT)?)
    }
    fn meals(&self, i: usize) -> Result<&AtomicU64> {
        Ok(self.map.atomic_u64(FORKS_AT + FORK * self.n + LINE * i)?)
    }
}

/// `mman philosophers`: Dining Philosophers with processes and semaphores in a shared file.
pub fn philosophers(args: PhilosophersArgs) -> Result<()> {
    // 2 to 1024, checked by the parser.
    let n = args.philosophers as usize;
    let mut tmp = None;
    let path = match &args.file {
        Some(p) => p.clone(),
        None => {
            let t = tmp.insert(tempfile::Builder::new()
                .prefix("mman-philosophers")
                .tempfile_in(crate::cleanup::temp_root())
                .context(
                    "philosophers: create the table file (in $TMPDIR, which must be a writable directory)",
                )?);
            crate::cleanup::remove_on_signal(t.path());
            t.path().to_path_buf()
        }
    };
    // Held until the dinner ends: no other dinner resets this table meanwhile.
    let held = prepare_table(&path, n, args.file.is_some())?;
    let table = Table::open(&path, n)?;
    // A temporary table is unlinked at once: the philosophers get it as their descriptor 3,
    // and a SIGKILL of the dinner leaves no file behind.
    let (child_path, shown) = match tmp.take() {
        Some(t) => {
            let name = t.path().to_path_buf();
            t.close()
                .with_context(|| format!("philosophers: remove {}", name.display()))?;
            crate::cleanup::forget_path(&name);
            (
                PathBuf::from("/proc/self/fd/3"),
                "a temporary file (unlinked once open)".to_string(),
            )
        }
        None => (path.clone(), path.display().to_string()),
    };
    for i in 0..n {
        table.fork(i)?.post()?; // every fork starts on the table
    }
    table.gate()?; // made here, before any philosopher opens it
    let exe = std::env::current_exe().context("philosophers: find the mman executable")?;
    // The fair dinner's watch on the machine starts before the philosophers do: the window
    // before the gate opens sees the machine without the dinner.
    let mut watch = (!args.greedy).then(load::Watch::start);
    let mut children: Vec<Option<Tracked>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.arg("__philosopher")
            .arg(&child_path)
            .arg(n.to_string())
            .arg(i.to_string())
            .arg(args.meals.unwrap_or(0).to_string());
        if args.greedy {
            cmd.arg("--greedy");
        }
        if args.file.is_none() {
            crate::children::pass_fd(&mut cmd, held.as_fd(), 3);
        }
        // Dies with the dinner (see `children`): no philosopher outlives it.
        match crate::cleanup::spawn(&mut cmd) {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                end_dinner(&table, &mut children)?;
                return Err(e.context(format!("philosophers: start philosopher {i}")));
            }
        }
    }
    if let Some(w) = &mut watch {
        std::thread::sleep(load::FIRST_WINDOW.saturating_sub(w.since.elapsed()));
        w.look(table.load()?, &children);
    }
    // Wait at the gate with the philosophers, then start the clock. A philosopher that dies
    // before it sits down would keep the gate shut: look at the children between waits.
    let gate = table.gate()?;
    let seated = Instant::now();
    while gate.wait_timeout(Duration::from_millis(100)).is_none() {
        let ended = children.iter_mut().enumerate().find_map(|(i, slot)| {
            let child = slot.as_mut()?;
            match child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(format!(
                    "philosopher {i} (pid {}) {}",
                    child.id(),
                    crate::cleanup::how(status)
                )),
                Err(e) => Some(format!("philosopher {i} (pid {}): wait: {e}", child.id())),
            }
        });
        if ended.is_some() || seated.elapsed() >= GATE_PATIENCE {
            let why = ended.or_else(|| stopped_one(&children)).unwrap_or_else(|| {
                format!(
                    "not every philosopher sat down within {} s of the last one's start \
                         (garbage in the table file {shown}, or a machine too loaded to run {n} processes)",
                    GATE_PATIENCE.as_secs(),
                )
            });
            end_dinner(&table, &mut children)?;
            bail!("philosophers: the dinner was not started: {why}");
        }
    }
    let start = Instant::now();
    let deadline = match (args.meals, args.seconds) {
        (Some(_), _) => None,
        (None, s) => Some(start + Duration::from_secs_f64(s.unwrap_or(2.0).max(0.0))),
    };
    let read_meals = || -> Result<Vec<u64>> {
        (0..n)
            .map(|i| table.meals(i).map(|m| m.load(Ordering::SeqCst)))
            .collect()
    };
    // A timed dinner is measured from the gate's opening to the stop flag (as the C
    // baseline does): the time to start the processes does not count, nor the time they take
    // to notice the flag and exit.
    let mut at_stop: Option<(f64, Vec<u64>)> = None;
    let mut died = None;
    let mut left = n;
    let mut stopped = Instant::now();
    while left > 0 {
        if at_stop.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            table.stop()?.store(1, Ordering::SeqCst);
            stopped = Instant::now();
            at_stop = Some((start.elapsed().as_secs_f64(), read_meals()?));
        }
        for (i, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait().context("philosophers: wait")? {
                let pid = child.id();
                *slot = None;
                left -= 1;
                if !status.success() && died.is_none() {
                    died = Some((i, pid, status));
                }
            }
        }
        if died.is_some() {
            // A dead philosopher may hold forks forever: end the dinner now.
            end_dinner(&table, &mut children)?;
            break;
        }
        if left > 0 && at_stop.is_some() && stopped.elapsed() >= STOP_PATIENCE {
            // The table is shared memory: forks scribbled over (or reset by a program that
            // ignored the lock) can leave a philosopher waiting for good.
            let (i, pid) = children
                .iter()
                .enumerate()
                .find_map(|(i, c)| c.as_ref().map(|c| (i, c.id())))
                .unwrap_or_default();
            let stopped = stopped_one(&children);
            end_dinner(&table, &mut children)?;
            if let Some(stopped) = stopped {
                bail!("philosophers: {stopped}, so the dinner could not end; every philosopher was ended");
            }
            bail!(
                "philosophers: philosopher {i} (pid {pid}) and {} more had not left the table {} s after the \
                 dinner was stopped (garbage in the table file {shown}?); every philosopher was ended",
                left - 1,
                STOP_PATIENCE.as_secs(),
            );
        }
        if let Some(w) = watch
            .as_mut()
            .filter(|w| at_stop.is_none() && w.since.elapsed() >= load::window(n))
        {
            w.look(table.load()?, &children);
        }
        let tick = Duration::from_millis(20);
        let until_stop = deadline
            .filter(|_| at_stop.is_none())
            .map_or(tick, |d| d.saturating_duration_since(Instant::now()));
        std::thread::sleep(tick.min(until_stop));
    }
    if let Some((i, pid, status)) = died {
        bail!(
            "philosophers: philosopher {i} (pid {pid}) {}; the dinner was stopped and every other philosopher ended",
            crate::cleanup::how(status)
        );
    }
    let (secs, meals) = match at_stop {
        Some(measured) => measured,
        None => (start.elapsed().as_secs_f64(), read_meals()?),
    };
    let total: u64 = meals.iter().sum();
    let (min, max) = (
        meals.iter().copied().min().unwrap_or(0),
        meals.iter().copied().max().unwrap_or(0),
    );
    outln!("Dining philosophers: {n} processes, forks are semaphores in {shown}")?;
    for (i, m) in meals.iter().enumerate() {
        outln!("  philosopher {i:>3}: {m} meals")?;
    }
    outln!(
        "total {total} meals in {secs:.3} s: {:.0} meals/s; fairness min/max {min}/{max} ({:.2})",
        total as f64 / secs.max(1e-9),
        if max > 0 { min as f64 / max as f64 } else { 1.0 }
    )?;
    Ok(())
}

/// A philosopher that is stopped (SIGSTOP, SIGTSTP, a debugger): alive, but it moves no
/// fork until it is continued. Named as such, not blamed on the table.
fn stopped_one(children: &[Option<Tracked>]) -> Option<String> {
    children.iter().enumerate().find_map(|(i, c)| {
        let pid = c.as_ref()?.id();
        crate::children::is_stopped(pid).then(|| {
            format!(
                "philosopher {i} (pid {pid}) is stopped (SIGSTOP, SIGTSTP or a debugger: state T) and does not move"
            )
        })
    })
}

/// End every philosopher: raise the stop flag, give them a moment to see it and exit, then
/// kill and reap the rest (dropping a `Tracked` kills and reaps it).
fn end_dinner(table: &Table, children: &mut [Option<Tracked>]) -> Result<()> {
    table.stop()?.store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    for c in children.iter_mut() {
        drop(c.take());
    }
    Ok(())
}

/// A fair dinner's rule: a philosopher that has eaten more than `FAIR_PERMILLE`/1000 of the
/// fewest meals anyone at the table has eaten, plus `FAIR_SLACK` (so the first meals are not
/// held up), stops eating until the hungriest has caught up with it (to within
/// `FAIR_SLACK`), napping `FAIR_NAP` at a time (or until the table has stood still for
/// [`FAIR_STALL`]). Everyone ends within about 2% of everyone else (0.5% at a table of 2 or
/// 3, [`FAIR_PERMILLE_ONE_EATER`]). The one with the fewest meals is never held back, so
/// someone always eats.
///
/// Measured on 2 CPUs against glibc `sem_t`'s dinner (bench/RESULTS.md), the choices behind
/// it: a bound on the lead over the neighbours (the rule before: 64 meals ahead at most)
/// forces the table into lockstep, and with 5 philosophers on 2 CPUs lockstep keeps putting
/// two neighbours, who share a fork, on the CPUs at once: 0.40-0.45x `sem_t`'s meals/s. A
/// ratio lets a philosopher run on while it stays within bounds (0.6-0.8x); waiting for the
/// hungriest to catch up all the way, asleep rather than yielding (each yield was a context
/// switch: 46,000 a second), holds a philosopher back rarely and frees its CPU meanwhile.
/// With the looks of [`FAIR_EVERY`], the scheduling of [`not_preempted_by_wakers`] and the
/// semaphore's guessing compare-and-swap, both dinners started at a gate: 1.03-1.44x
/// `sem_t`'s meals/s at N = 5, 1.5-1.6x at 16, 2.7-3.9x at 2, fairness 0.98-1.00 against
/// `sem_t`'s 0.07-0.99 (bench/RESULTS.md, "With the gate").
const FAIR_PERMILLE: u64 = 1020;
/// The bound at a table of 2 or 3, where every two philosophers share a fork, so only one
/// eats at a time: holding one back takes nothing from the table (the other eats alone, as
/// fast), and a tighter bound costs no meals (N = 2 and 3, four rounds each: as many meals a
/// second at 0.5% as at 2%; at N = 5 and 16, 0.5% cost 15%). At N = 2 `sem_t` hands the
/// forks back and forth and reaches fairness 0.99-1.00: 2% would end at 0.98.
///
/// At a table of 2 the philosophers take turns: the one ahead naps until the other is as far
/// ahead of it (or has eaten all its meals), not merely until the other has caught up.
/// Caught up, both ate at once, and since they share both forks their meals alternated one
/// by one, the forks' cache lines crossing between CPUs at every meal, until chance gave one
/// a 0.5% lead: 36-44 M meals/s on two CPUs (split, free), against 59-100 M by turns, with
/// the same fairness; on one CPU 100 M either way (2 s dinners, builds alternated;
/// bench/RESULTS.md, "beside load"). Not at a table of 3, where one
/// also eats at a time: two nappers each waiting for the other to get ahead would wait until
/// [`FAIR_STALL`].
const FAIR_PERMILLE_ONE_EATER: u64 = 1005;
/// See [`FAIR_PERMILLE`].
const FAIR_SLACK: u64 = 64;
/// See [`FAIR_PERMILLE`].
const FAIR_NAP: Duration = Duration::from_micros(300);
/// A napping philosopher eats again when the fewest meals at the table have not changed for
/// this long, and does not nap for that count again: the counters are shared memory, and one
/// nobody will raise (a napper's or a finished philosopher's, garbage written over by a peer;
/// a philosopher stopped by a signal) must not keep the others napping for good (with
/// `--meals` no stop flag would end the naps). Far above any catching up at an undisturbed
/// table, which takes milliseconds.
const FAIR_STALL: Duration = Duration::from_secs(1);
/// A fair philosopher looks at the table after this many meals, or after
/// `meals >> FAIR_EVERY_SHIFT` (about 0.1% of the meals it has eaten), or after N meals at a
/// table of N, whichever is most. The counters of the others are lines other CPUs keep
/// writing, so each look costs a cache miss per philosopher eating meanwhile, and its own
/// counter's next store a miss too: every 64 meals that was 10% of the fair dinner's meals/s
/// at N = 5 (18.9 M against 21.1 M meals/s with looks every 1,024, five rounds alternated).
/// And a look reads N lines: at N = 1,024, looking every 64 meals held the dinner to 2.4 M
/// meals/s, every 1,024 to 9.9 M (fairness 0.96 and 0.95). The lead a philosopher can gain
/// between looks is thus 0.1% of its meals, or N meals where that is more: at a large table
/// in a short dinner (a thousand philosophers, a few thousand meals each) the bound is
/// looser than 2%. At a table of 2, which takes turns (see [`FAIR_PERMILLE_ONE_EATER`]), a
/// philosopher looks every `FAIR_EVERY` meals all the same: while it eats alone the other's
/// counter stands still, so a look costs no miss, and the lead stays within 0.5% and 128
/// meals (fairness 0.995) instead of 0.6%.
const FAIR_EVERY: u64 = 64;
/// See [`FAIR_EVERY`].
const FAIR_EVERY_SHIFT: u32 = 10;

/// One philosopher (a hidden subcommand run by `mman philosophers`): think, take the lower-
/// numbered fork then the higher one (a global order: no cycle, so no deadlock), eat,
/// put both back; until the meals are eaten or the stop flag is up.
pub fn philosopher(path: PathBuf, n: usize, i: usize, meals: u64, greedy: bool) -> Result<()> {
    let fair = !greedy;
    let table = Table::open(&path, n)?;
    let load = table.load()?;
    // Whether this philosopher runs SCHED_BATCH: set at its first look at the table, then
    // whenever the load word changes.
    let mut batch = None;
    let (a, b) = (i, (i + 1) % n);
    let (first, second) = (table.fork(a.min(b))?, table.fork(a.max(b))?);
    // Seated: wait for everyone else (see GATE_AT). One long wait, not a loop of short ones:
    // at N = 1,024 philosophers waking every 100 ms to look at the stop flag left the dinner
    // with fairness 0.01 instead of 0.95 (2 s dinners).
    table.gate()?.wait_timeout(SEATED_PATIENCE);
    let stop = table.stop()?;
    let eaten = table.meals(i)?;
    let all: Vec<&AtomicU64> = (0..n).map(|j| table.meals(j)).collect::<Result<_>>()?;
    let fewest = || all.iter().map(|m| m.load(Ordering::Relaxed)).min().unwrap_or(0);
    // At most n / 2 philosophers eat at once.
    let bound = if n / 2 <= 1 {
        FAIR_PERMILLE_ONE_EATER
    } else {
        FAIR_PERMILLE
    };
    // Saturating: a counter is shared memory, and garbage in it must not overflow.
    let too_far_ahead = |mine: u64, fewest: u64| {
        mine.saturating_mul(1000) > fewest.saturating_mul(bound).saturating_add(FAIR_SLACK * 1000)
    };
    let (mut mine, mut next_look) = (0u64, 0u64);
    // The fewest meals a nap gave up on (see FAIR_STALL): no nap for it again.
    let mut stalled = None;
    'dinner: while (meals == 0 || mine < meals) && stop.load(Ordering::Relaxed) == 0 {
        if fair && mine >= next_look {
            let every = if n == 2 {
                FAIR_EVERY
            } else {
                FAIR_EVERY.max(mine >> FAIR_EVERY_SHIFT).max(n as u64)
            };
            next_look = mine.saturating_add(every);
            follow(load, &mut batch);
            let f = fewest();
            if stalled != Some(f) && too_far_ahead(mine, f) {
                let (mut seen, mut since) = (f, Instant::now());
                loop {
                    let f = fewest();
                    let done = if n == 2 {
                        // Turns (see FAIR_PERMILLE_ONE_EATER): until the other is as far
                        // ahead as this one was, or has eaten all its meals.
                        let most = all.iter().map(|m| m.load(Ordering::Relaxed)).max().unwrap_or(0);
                        too_far_ahead(most, mine) || (meals != 0 && most >= meals)
                    } else {
                        mine <= f.saturating_add(FAIR_SLACK)
                    };
                    if done {
                        break;
                    }
                    if stop.load(Ordering::Relaxed) != 0 {
                        break 'dinner;
                    }
                    if f != seen {
                        (seen, since) = (f, Instant::now());
                    } else if since.elapsed() >= FAIR_STALL {
                        stalled = Some(f);
                        break;
                    }
                    // Load that came while napping must not keep the napper from its CPU.
                    follow(load, &mut batch);
                    std::thread::sleep(FAIR_NAP);
                }
            }
        }
        // No timeout: the holder of a fork always puts it back (a philosopher that dies
        // holding one is noticed by the parent, which ends every philosopher).
        first.wait();
        second.wait();
        mine += 1;
        eaten.store(mine, Ordering::Relaxed);
        second.post()?;
        first.post()?;
    }
    Ok(())
}

/// Follow the table's load word: SCHED_BATCH while it is 0 (see [`not_preempted_by_wakers`]),
/// the default policy otherwise; a system call only when the verdict changes (`batch` holds
/// the last one set, None before the first).
fn follow(load: &AtomicU64, batch: &mut Option<bool>) {
    let want = load.load(Ordering::Relaxed) == 0;
    if *batch != Some(want) {
        not_preempted_by_wakers(want);
        *batch = Some(want);
    }
}

/// A fair philosopher asks the scheduler not to preempt it for a process that wakes up
/// (`SCHED_BATCH`, which any process may choose for itself, and leave again), while its table
/// has the CPUs to itself. The fair rule's naps end in wake-ups, about 4,000 a second at
/// N = 5, and under the default policy each preempted whatever philosopher ran on that CPU,
/// often holding a fork, so its neighbour spun and went to sleep on it: 20.9 M against
/// 22.6 M meals/s (N = 5, eight rounds alternated, all eight ahead; N = 2 and 16 unchanged).
/// Not for the greedy dinner: with no naps, the wake-ups are the forks' own, and a woken
/// waiter that cannot preempt waits longer (glibc `sem_t`'s dinner under `chrt -b 0`: 12 M
/// against 24 M meals/s). A hint: a kernel or sandbox that refuses it leaves the dinner as it
/// was.
///
/// The price is paid on a busy machine. Beside two processes that spin on both CPUs, a
/// napper that wakes cannot preempt them either, and waits out their time slices: the fair
/// dinner then served 3.5-10 M meals/s against glibc `sem_t`'s 15-16 M (fairness 0.98
/// against 0.26-0.43); without `SCHED_BATCH` it served 15-19 M there, but 5-9% less on an
/// idle machine. Batch only while napping recovers little (4-10 M). Neither nap lengths
/// (1.2-2.1 ms either way) nor the run queue tell the two cases apart from inside a
/// philosopher (bench/RESULTS.md, "under load"). The parent tells them apart: it sees the
/// whole machine, and what the table's CPUs did besides the dinner (`load`). So a fair
/// philosopher runs batch only while the table's load word says the CPUs are the dinner's
/// alone ([`follow`], at each look at the table and before each nap): beside CPU-bound load
/// the table leaves batch before the gate opens, or within a window of load that comes
/// mid-dinner, and takes it up again once the load is gone. Beside a spinner on each CPU the
/// fair dinner then served 1.4-2.9x `sem_t`'s meals/s at N = 2, 5 and 16 (before: 0.02-3.2x
/// from run to run, under 1x in 10 rows of 18), fairness unchanged (bench/RESULTS.md,
/// "beside load").
fn not_preempted_by_wakers(batch: bool) {
    #[cfg(target_os = "linux")]
    {
        let policy = if batch {
            libc::SCHED_BATCH
        } else {
            libc::SCHED_OTHER
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` during the call only; pid 0 is the calling
        // thread, the one that eats.
        let _hint = unsafe { libc::sched_setscheduler(0, policy, &param) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = batch;
}
