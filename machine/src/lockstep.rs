//! Lockstep (`ferrite run --lockstep`) and divergence bisection.
//!
//! Two machines built from the same configuration (the JIT as primary, the interpreter as the
//! reference) run the same guest in chunks of `interval` retired instructions. Host input reaches
//! the primary through its input port; every input it delivers is fed to the second machine, which
//! takes it at the same slot (devices are deterministic functions of their inputs and virtual time,
//! so each machine serving its own gives both the same answers). After each chunk the two states
//! are compared whole (CPU, clock, board, devices, the engine's TLB, RAM byte for byte). The last
//! state found equal is kept as a snapshot; when a chunk ends with different states,
//! [`Lockstep::bisect`] restores that snapshot into both machines and re-runs them, halving the range
//! until it has the first retired-instruction count after which they differ, and reports both states
//! there. [`bisect`] does the same for any pair (replay uses it against the interpreter).

use crate::snapfile::MemSnapshot;
use crate::{Machine, RunOutcome, StampedInput};
use std::cell::RefCell;
use std::rc::Rc;

/// Where two machines first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The retired-instruction count after which the states first differ (they are equal after
    /// `icount - 1`).
    pub icount: u64,
    /// Both states and what differs, for a human.
    pub report: String,
}

fn cpu_bytes(m: &Machine) -> Vec<u8> {
    let mut w = vmcore::SnapshotWriter::new();
    crate::snapshot::save_cpu(&mut w, &m.cpu);
    w.finish()
}

/// What differs between `a` (which returned `oa`) and `b` (`ob`), or `None` when the two runs ended
/// alike in identical states.
pub fn differences(a: &Machine, oa: &RunOutcome, b: &Machine, ob: &RunOutcome) -> Option<String> {
    let mut d = Vec::new();
    let kind = |o: &RunOutcome| match o {
        RunOutcome::Stopped { reason, .. } => format!("stopped ({reason})"),
        o => format!("{o:?}"),
    };
    if kind(oa) != kind(ob) {
        d.push(format!("the runs ended differently: {} / {}", kind(oa), kind(ob)));
    }
    if (a.cpu.icount, a.slot()) != (b.cpu.icount, b.slot()) {
        d.push(format!("retired/slot {}/{} vs {}/{}", a.cpu.icount, a.slot(), b.cpu.icount, b.slot()));
    }
    if cpu_bytes(a) != cpu_bytes(b) {
        let (da, db) = (a.cpu.dump(), b.cpu.dump());
        let lines: Vec<String> = da
            .lines()
            .zip(db.lines())
            .filter(|(x, y)| x != y)
            .map(|(x, y)| format!("  {x}\n  {y}"))
            .collect();
        if lines.is_empty() {
            d.push("CPU state differs outside the register dump (x87/SSE/AVX, MSRs or hidden state)".into());
        } else {
            d.push(format!("CPU registers differ:\n{}", lines.join("\n")));
        }
    } else {
        let (wa, wb) = (a.save_head_writer(), b.save_head_writer());
        let (ha, hb) = (wa.as_bytes(), wb.as_bytes());
        if ha != hb {
            let at = ha.iter().zip(hb).position(|(x, y)| x != y).unwrap_or(ha.len().min(hb.len()));
            let section = match wa.section_at(at) {
                Some((name, off)) => format!(", in section `{name}` at offset {off}"),
                None => String::new(),
            };
            d.push(format!("device or engine state differs (byte {at} of the machine state{section})"));
        }
    }
    let (ra, rb) = (a.board.ram.as_slice(), b.board.ram.as_slice());
    if ra != rb {
        let pages = ra.chunks(4096).zip(rb.chunks(4096)).filter(|(x, y)| x != y).count();
        if let Some(at) = ra.iter().zip(rb).position(|(x, y)| x != y) {
            let end = (at + 16).min(ra.len());
            d.push(format!(
                "RAM differs on {pages} page(s), first at {at:#x}: {:02x?} / {:02x?}",
                &ra[at..end],
                &rb[at..end]
            ));
        }
    }
    if d.is_empty() { None } else { Some(d.join("\n")) }
}

/// Restores `snap` into `a` and `b`, gives both `inputs`, runs both to `to` retired instructions and
/// returns what differs (see [`differences`]).
fn run_both(
    a: &mut Machine,
    b: &mut Machine,
    snap: &MemSnapshot,
    inputs: &[StampedInput],
    to: u64,
) -> Result<Option<String>, String> {
    for m in [&mut *a, &mut *b] {
        snap.restore(m).map_err(|e| format!("restoring the last good state: {e}"))?;
        m.replay_inputs(inputs.iter().cloned());
    }
    let oa = a.run(Some(to));
    let ob = b.run(Some(to));
    Ok(differences(a, &oa, b, &ob))
}

/// Finds the first retired-instruction count in `good..=bad` after which `a` and `b` differ, given a
/// snapshot `snap` of the state at `good` (where they agree) and the inputs from there on. Both
/// machines are left at that count. `Err` when they do not differ at `bad` when re-run (the
/// divergence did not come from the engines: the inputs or images differ).
pub fn bisect(
    a: &mut Machine,
    b: &mut Machine,
    snap: &MemSnapshot,
    inputs: &[StampedInput],
    good: u64,
    bad: u64,
) -> Result<Divergence, String> {
    let (names_a, names_b) = (a.engine().name(), b.engine().name());
    if bad <= good {
        return Err(format!("nothing to bisect between count {good} and count {bad}"));
    }
    if run_both(a, b, snap, inputs, bad)?.is_none() {
        return Err(format!(
            "{names_a} and {names_b} agree from count {good} to count {bad} when re-run from the last good state"
        ));
    }
    let (mut lo, mut hi) = (good, bad);
    let mut probes = 1;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        probes += 1;
        if run_both(a, b, snap, inputs, mid)?.is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The instruction that made the difference: where the CPU was after `lo` instructions.
    run_both(a, b, snap, inputs, lo)?;
    let before = format!("{:#x} (CS base {:#x})", a.cpu.rip, a.cpu.seg[cpu::state::Seg::Cs as usize].base);
    let diff = run_both(a, b, snap, inputs, hi)?.unwrap_or_default();
    let report = format!(
        "the states first differ after instruction {hi} (the instruction at RIP {before}, found in {probes} re-runs from count {good})\n{diff}\n--- {names_a} ---\n{}\n--- {names_b} ---\n{}",
        a.cpu.dump(),
        b.cpu.dump()
    );
    Ok(Divergence { icount: hi, report })
}

/// How a lockstep run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockstepOutcome {
    /// Both machines ended alike, in identical states.
    Finished(RunOutcome),
    /// The states differ after a chunk: equal at `good`, different at `bad` ([`Lockstep::bisect`]
    /// finds the instruction).
    Diverged {
        /// The last count at which the states were equal (the kept snapshot's).
        good: u64,
        /// The count at which they were found different.
        bad: u64,
        /// What differs there.
        summary: String,
    },
}

/// Two machines in lockstep (see the module docs).
pub struct Lockstep {
    /// The primary (its devices' output is the run's output; host input reaches it first).
    pub a: Machine,
    /// The reference, fed the primary's inputs.
    pub b: Machine,
    /// Retired instructions per chunk.
    pub interval: u64,
    log: Rc<RefCell<Vec<StampedInput>>>,
    feed: bool,
    good: u64,
    snap: MemSnapshot,
    since_good: Vec<StampedInput>,
    /// Chunks compared so far.
    pub chunks: u64,
}

impl Lockstep {
    /// Pairs `a` and `b`, built from the same configuration and in the same state. With `feed`, every
    /// input `a` takes is given to `b` (a live console on `a`); without, both already have their
    /// inputs (both replaying one recording). An input hook already on `a` ([`Machine::record_inputs`],
    /// a recording of the run) keeps seeing every input.
    pub fn new(mut a: Machine, mut b: Machine, interval: u64, feed: bool) -> Lockstep {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l2 = log.clone();
        // Chained after a hook already installed (a recording of the lockstep run), which has seen
        // the RTC's start already.
        let mut inner = a.recorder.take();
        a.recorder = Some(Box::new(move |s| {
            if let Some(r) = inner.as_mut() {
                r(s);
            }
            l2.borrow_mut().push(s.clone());
        }));
        if feed {
            b.replay_inputs(std::iter::empty());
        }
        let (good, snap) = (a.cpu.icount, MemSnapshot::take(&a, None));
        Lockstep { a, b, interval: interval.max(1), log, feed, good, snap, since_good: Vec::new(), chunks: 0 }
    }

    /// Runs both machines until the guest ends, `max_instructions` retire, or their states differ.
    pub fn run(&mut self, max_instructions: Option<u64>) -> LockstepOutcome {
        let limit = max_instructions.unwrap_or(u64::MAX);
        loop {
            let target = self.a.cpu.icount.saturating_add(self.interval).min(limit);
            let oa = self.a.run(Some(target));
            let new: Vec<StampedInput> = self.log.borrow_mut().drain(..).collect();
            if self.feed {
                self.b.feed_inputs(new.iter().cloned());
            }
            self.since_good.extend(new);
            let ob = self.b.run(Some(target));
            self.chunks += 1;
            if let Some(summary) = differences(&self.a, &oa, &self.b, &ob) {
                let bad = self.a.cpu.icount.max(self.b.cpu.icount).max(self.good + 1);
                return LockstepOutcome::Diverged { good: self.good, bad, summary };
            }
            if oa != RunOutcome::InstructionLimit || self.a.cpu.icount >= limit {
                return LockstepOutcome::Finished(oa);
            }
            self.good = self.a.cpu.icount;
            // Sparse, and sharing the pages that did not change with the previous good state.
            self.snap = MemSnapshot::take(&self.a, Some(&self.snap));
            self.since_good.clear();
        }
    }

    /// After [`LockstepOutcome::Diverged`]: bisects from the last good snapshot to the first differing
    /// instruction (both machines are left there; the input channel is no longer used).
    pub fn bisect(&mut self, good: u64, bad: u64) -> Result<Divergence, String> {
        let inputs = std::mem::take(&mut self.since_good);
        let r = bisect(&mut self.a, &mut self.b, &self.snap, &inputs, good, bad);
        self.log.borrow_mut().clear();
        r
    }
}
