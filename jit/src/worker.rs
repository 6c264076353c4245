//! The compile thread: a `Jit` of its own turning blocks into position-independent machine code
//! while the interpreter goes on running them. The thread never touches guest state or executable
//! memory: it returns bytes, which the owning thread places (`backend.rs`), so when a translation
//! arrives cannot change what the guest sees.
//!
//! Jobs wait in a bounded queue that the thread serves **hottest first**: each job carries a
//! counter ([`Heat`]) that the owner raises every time it runs the block interpreted while the
//! translation is pending, so a burst of new code (a boot) gets its busiest blocks translated
//! first and fewer block runs are interpreted meanwhile (regions, hot loops of blocks already
//! translated, go before any block). Ties go oldest first. Results come back over a channel
//! (std's `mpsc`, which is crossbeam-channel's implementation since Rust 1.67).

use crate::Jit;
use cpu::exec::Insn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Jobs queued at most, by default: past it a block is left interpreted and asks again later
/// (back-pressure, and a bound on the memory a burst of new code can queue).
pub(crate) const QUEUE: usize = 512;
/// Idle jobs (warm blocks, `Worker::submit_idle`) queued at most.
const IDLE: usize = 1 << 14;

/// A test knob: the compile thread sleeps a pseudo-random time before each job, so that translations
/// arrive at arbitrary points of the guest's run. The guest's results must not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileDelay {
    /// Seed of the delays.
    pub seed: u64,
    /// Longest delay, in microseconds.
    pub max_us: u64,
}

/// A block to compile.
pub(crate) struct Job {
    /// The owner's name for the job.
    pub id: u64,
    /// A copy of the block's instructions.
    pub insns: Vec<Insn>,
    /// For a region (`region.rs`): its members' lengths (`insns` holds them one after the
    /// other); empty for a block.
    pub members: Vec<usize>,
}

/// How urgently a queued job is wanted: the block runs interpreted while it waits (raised by the
/// owner, read by the compile thread; only an order, never a result, depends on it).
#[derive(Clone, Default)]
pub(crate) struct Heat(Arc<AtomicU64>);

impl Heat {
    /// Counts one more interpreted run of the job's block.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The jobs waiting for the compile thread.
#[derive(Default)]
struct Queue {
    /// Waiting jobs with their heat (`u64::MAX` for a region).
    jobs: Vec<(Job, Option<Heat>)>,
    /// Jobs for idle time (warm blocks), oldest first: taken only when `jobs` is empty.
    idle: std::collections::VecDeque<Job>,
    /// Set when the owner is gone: the thread ends once the queue is empty of what it wants.
    closed: bool,
    /// Set when the thread has ended.
    ended: bool,
}

impl Queue {
    /// Removes the job to compile next: the hottest, the oldest (lowest id) among equals; a
    /// region (no heat) before any block; an idle job only when no other waits.
    fn take(&mut self) -> Option<Job> {
        let heat = |h: &Option<Heat>| h.as_ref().map_or(u64::MAX, Heat::get);
        let best = (0..self.jobs.len()).max_by(|&a, &b| {
            let (ja, jb) = (&self.jobs[a], &self.jobs[b]);
            heat(&ja.1).cmp(&heat(&jb.1)).then(jb.0.id.cmp(&ja.0.id))
        });
        match best {
            Some(best) => Some(self.jobs.swap_remove(best).0),
            None => self.idle.pop_front(),
        }
    }
}

/// The queue and the condition the compile thread waits on.
type Shared = Arc<(Mutex<Queue>, Condvar)>;

/// Locks the queue (a panic elsewhere while holding it leaves it usable: it is a plain list).
fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why [`Worker::submit`] did not queue a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Submit {
    /// The queue is full (`Options::queue` jobs).
    Full,
    /// The compile thread has ended.
    Ended,
}

/// A compiled block.
pub(crate) struct Done {
    /// The job's id.
    pub id: u64,
    /// The machine code (`Jit::code_bytes`), `None` when Cranelift declined or failed.
    pub code: Option<Vec<u8>>,
    /// Instructions lowered inline and translated as handler calls.
    pub inlined: u64,
    /// Instructions translated as calls of their handler.
    pub called: u64,
    /// Thread CPU time the compilation took, in nanoseconds (statistics only).
    pub ns: u64,
}

/// The compile thread, its job queue and its result channel.
pub(crate) struct Worker {
    queue: Shared,
    /// Jobs the queue holds at most.
    limit: usize,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; fails when the host cannot start one or Cranelift does not support it.
    pub(crate) fn spawn(delay: Option<CompileDelay>, queue: usize) -> Result<Worker, String> {
        let shared: Shared = Arc::default();
        let theirs = shared.clone();
        let (done_tx, done) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferrite-jit".into())
            .spawn(move || {
                // However the thread ends, the owner stops queueing.
                struct End(Shared);
                impl Drop for End {
                    fn drop(&mut self) {
                        lock(&self.0).ended = true;
                    }
                }
                let _end = End(theirs.clone());
                let mut jit = match Jit::new() {
                    Ok(j) => {
                        let _ = ready_tx.send(Ok(()));
                        j
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut rng = delay.map_or(0, |d| d.seed | 1);
                let next = || {
                    let mut q = lock(&theirs);
                    loop {
                        if let Some(job) = q.take() {
                            return Some(job);
                        }
                        if q.closed {
                            return None;
                        }
                        q = theirs.1.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                };
                while let Some(job) = next() {
                    if let Some(d) = delay {
                        rng = xorshift(rng);
                        std::thread::sleep(Duration::from_micros(rng % (d.max_us + 1)));
                    }
                    let before = jit.stats();
                    let t0 = thread_cpu_ns();
                    // A Cranelift panic (a bug) costs the translation, not the thread or the guest.
                    let code = catch_unwind(AssertUnwindSafe(|| {
                        if job.members.is_empty() {
                            jit.code_bytes(&job.insns)
                        } else {
                            jit.region_bytes(&job.insns, &job.members)
                        }
                    }))
                    .unwrap_or(None);
                    let ns = thread_cpu_ns().saturating_sub(t0);
                    let after = jit.stats();
                    let d = Done {
                        id: job.id,
                        code,
                        inlined: after.inlined - before.inlined,
                        called: after.called - before.called,
                        ns,
                    };
                    if done_tx.send(d).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the compile thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Worker { queue: shared, limit: queue.max(1), done, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the compile thread ended at start".into()),
        }
    }

    /// Queues a job, ranked by `heat` (`None`: a region, before every block); says why not when
    /// the queue is full or the thread has ended.
    pub(crate) fn submit(&self, job: Job, heat: Option<Heat>) -> Result<(), Submit> {
        let mut q = lock(&self.queue);
        if q.ended || q.closed {
            return Err(Submit::Ended);
        }
        if q.jobs.len() >= self.limit {
            return Err(Submit::Full);
        }
        q.jobs.push((job, heat));
        drop(q);
        self.queue.1.notify_one();
        Ok(())
    }

    /// Queues a job for the thread's idle time (after every other job), up to [`IDLE`] of them.
    pub(crate) fn submit_idle(&self, job: Job) -> Result<(), Submit> {
        let mut q = lock(&self.queue);
        if q.ended || q.closed {
            return Err(Submit::Ended);
        }
        if q.idle.len() >= IDLE {
            return Err(Submit::Full);
        }
        q.idle.push_back(job);
        drop(q);
        self.queue.1.notify_one();
        Ok(())
    }

    /// Makes the idle job `id`, if it still waits, an ordinary one ranked by `heat` (it is wanted
    /// now); says whether it did. Ignores the queue's bound: the job was queued already.
    pub(crate) fn promote(&self, id: u64, heat: Heat) -> bool {
        let mut q = lock(&self.queue);
        let Some(at) = q.idle.iter().position(|j| j.id == id) else { return false };
        let Some(job) = q.idle.remove(at) else { return false };
        q.jobs.push((job, Some(heat)));
        true
    }

    /// A finished job, if one is waiting.
    pub(crate) fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// Waits for the next finished job; `None` once the thread has ended.
    pub(crate) fn wait_done(&self) -> Option<Done> {
        self.done.recv().ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop after its current job; what still waits is
        // abandoned.
        {
            let mut q = lock(&self.queue);
            q.closed = true;
            q.jobs.clear();
            q.idle.clear();
        }
        self.queue.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU time this thread has used, in nanoseconds: what a compilation costs, unlike wall time
/// unaffected by other processes on a loaded host (statistics only).
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; the call only writes it.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if r != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// One step of a xorshift64 generator (the delays need no quality, only repeatability).
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> Job {
        Job { id, insns: Vec::new(), members: Vec::new() }
    }

    #[test]
    fn the_queue_serves_regions_then_the_hottest_block_then_the_oldest() {
        let heats: Vec<Heat> = (0..4).map(|_| Heat::default()).collect();
        let mut q = Queue::default();
        for (id, h) in heats.iter().enumerate() {
            q.jobs.push((job(id as u64), Some(h.clone())));
        }
        q.jobs.push((job(9), None));
        for _ in 0..3 {
            heats[2].bump();
        }
        // Raised after queueing: the order follows the heat at the time of taking.
        heats[1].bump();
        heats[1].bump();
        let order: Vec<u64> = std::iter::from_fn(|| q.take()).map(|j| j.id).collect();
        // 0 and 3 were never run: the older first.
        assert_eq!(order, [9, 2, 1, 0, 3]);
    }

    #[test]
    fn idle_jobs_wait_for_every_other_job() {
        let mut q = Queue::default();
        q.idle.push_back(job(20));
        q.idle.push_back(job(21));
        q.jobs.push((job(5), Some(Heat::default())));
        assert_eq!(q.take().map(|j| j.id), Some(5));
        q.jobs.push((job(6), None));
        assert_eq!(q.take().map(|j| j.id), Some(6));
        // Only now, oldest first.
        assert_eq!(q.take().map(|j| j.id), Some(20));
        assert_eq!(q.take().map(|j| j.id), Some(21));
        assert!(q.take().is_none());
    }
}
