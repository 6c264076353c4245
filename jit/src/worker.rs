//! The compile thread: a `Jit` of its own turning blocks into position-independent machine code
//! while the interpreter goes on running them. Jobs and results travel over channels (std's
//! `mpsc`, which is crossbeam-channel's implementation since Rust 1.67); the thread never touches
//! guest state or executable memory: it returns bytes, which the owning thread places
//! (`backend.rs`), so when a translation arrives cannot change what the guest sees.

use crate::Jit;
use cpu::exec::Insn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Jobs queued at most, by default: past it a block is left interpreted and asks again later
/// (back-pressure, and a bound on the memory a burst of new code can queue).
pub(crate) const QUEUE: usize = 512;

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

/// The compile thread and its two channels.
pub(crate) struct Worker {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; fails when the host cannot start one or Cranelift does not support it.
    pub(crate) fn spawn(delay: Option<CompileDelay>, queue: usize) -> Result<Worker, String> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(queue.max(1));
        let (done_tx, done) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferrite-jit".into())
            .spawn(move || {
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
                while let Ok(job) = job_rx.recv() {
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
            Ok(Ok(())) => Ok(Worker { jobs: Some(jobs), done, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the compile thread ended at start".into()),
        }
    }

    /// Queues a job; says why not when the queue is full or the thread has ended.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Submit> {
        let Some(jobs) = &self.jobs else { return Err(Submit::Ended) };
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Submit::Full,
            TrySendError::Disconnected(_) => Submit::Ended,
        })
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
        // Closing the job channel ends the thread's loop after its current job.
        self.jobs = None;
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
