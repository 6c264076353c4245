//! Reverse execution: periodic in-memory snapshots (checkpoints) of the whole machine, a log of every
//! input the guest was given, and deterministic re-execution between them.
//!
//! Going back to instruction count `t` restores the last checkpoint at or before `t` and runs the
//! machine forward to exactly `t`, delivering the logged inputs at the slots they were first seen at
//! ([`crate::Machine`]'s input script), so the guest takes the same path, device for device: every
//! device is in the snapshot and gets its time from the instruction count. While the machine is behind
//! the furthest point it has reached (the frontier), the live console input is parked, logged inputs
//! are delivered instead, and guest output is muted (it was already shown); at the frontier, live input
//! and output come back.

use crate::input::{GuestInput, StampedInput};
use crate::{Machine, RunOutcome};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Default instructions between two checkpoints.
pub const DEFAULT_INTERVAL: u64 = 20_000_000;
/// Default host memory the checkpoints may take.
pub const DEFAULT_BUDGET: usize = 1 << 30;

struct Checkpoint {
    icount: u64,
    /// Inputs logged before the checkpoint was taken.
    inputs: usize,
    /// The machine, RAM held sparsely and shared with the checkpoint before where unchanged.
    state: crate::snapfile::MemSnapshot,
}

#[derive(Default)]
struct InputLog {
    inputs: Vec<StampedInput>,
    /// Inputs delivered now come from the log itself: not logged again.
    replaying: bool,
}

/// The history of a debugged run.
pub struct History {
    checkpoints: Vec<Checkpoint>,
    log: Rc<RefCell<InputLog>>,
    /// Instructions between checkpoints.
    pub interval: u64,
    /// Host memory the checkpoints may take; past it the oldest are dropped.
    pub budget: usize,
    /// The furthest instruction count reached with live input.
    frontier: u64,
    /// Set while guest output must not be shown (re-execution behind the frontier).
    mute: Option<Arc<AtomicBool>>,
    /// The live console input, parked while the machine is behind the frontier.
    parked: Option<crate::InputSource>,
    /// Host time the last checkpoint took, and when it was taken: checkpoints are spaced so that
    /// taking them costs at most a tenth of the host time (host timing decides only where they are,
    /// never what the guest does).
    last_cost: std::time::Duration,
    last_taken: Option<std::time::Instant>,
}

impl History {
    /// Starts recording `m`'s history: installs an input logger (chained before any recorder already
    /// installed) and takes the first checkpoint. `mute`, when given, is set while output must not be
    /// shown (the frontend's output sinks test it).
    pub fn attach(m: &mut Machine, mute: Option<Arc<AtomicBool>>) -> History {
        let log = Rc::new(RefCell::new(InputLog::default()));
        let mut inner = m.recorder.take();
        let l2 = log.clone();
        m.recorder = Some(Box::new(move |i: &StampedInput| {
            if let Some(r) = inner.as_mut() {
                r(i);
            }
            let mut l = l2.borrow_mut();
            if !l.replaying && !matches!(i.input, GuestInput::RtcStart(_)) {
                l.inputs.push(i.clone());
            }
        }));
        let mut h = History {
            checkpoints: Vec::new(),
            log,
            interval: DEFAULT_INTERVAL,
            budget: DEFAULT_BUDGET,
            frontier: m.cpu.icount,
            mute,
            parked: None,
            last_cost: std::time::Duration::ZERO,
            last_taken: None,
        };
        h.checkpoint(m);
        h
    }

    /// Forgets the history (the machine was loaded from elsewhere): the current state is the new
    /// start.
    pub fn reset(&mut self, m: &mut Machine) {
        self.checkpoints.clear();
        self.log.borrow_mut().inputs.clear();
        self.log.borrow_mut().replaying = false;
        m.script.clear();
        if let Some(rx) = self.parked.take() {
            m.input = Some(rx);
        }
        self.frontier = m.cpu.icount;
        self.checkpoint(m);
    }

    /// Instruction count of the earliest point that can be gone back to.
    pub fn earliest(&self) -> u64 {
        self.checkpoints.first().map_or(0, |c| c.icount)
    }

    /// Checkpoints held and the bytes they take.
    pub fn usage(&self) -> (usize, usize) {
        (self.checkpoints.len(), self.checkpoints.iter().map(|c| c.state.bytes()).sum())
    }

    /// Host time the last checkpoint took to take.
    pub fn last_checkpoint_cost(&self) -> std::time::Duration {
        self.last_cost
    }

    /// The furthest instruction count reached with live input.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Inputs logged so far.
    pub fn inputs_logged(&self) -> usize {
        self.log.borrow().inputs.len()
    }

    fn checkpoint(&mut self, m: &mut Machine) {
        let icount = m.cpu.icount;
        if self.checkpoints.iter().any(|c| c.icount == icount) {
            return;
        }
        // Inputs delivered at or before this point: those logged up to now while live; while
        // replaying, those the script has delivered.
        let inputs = {
            let l = self.log.borrow();
            if l.replaying { l.inputs.len() - m.script.len() } else { l.inputs.len() }
        };
        let pos = self.checkpoints.partition_point(|c| c.icount < icount);
        let started = std::time::Instant::now();
        // Pages unchanged since the checkpoint before this one are shared with it.
        let prev = pos.checked_sub(1).map(|p| &self.checkpoints[p].state);
        let state = crate::snapfile::MemSnapshot::take(m, prev);
        self.last_cost = started.elapsed();
        self.last_taken = Some(std::time::Instant::now());
        self.checkpoints.insert(pos, Checkpoint { icount, inputs, state });
        while self.checkpoints.len() > 1 && self.usage().1 > self.budget {
            self.checkpoints.remove(0);
        }
    }

    /// Takes a checkpoint when the last one at or before the current count is `interval` or more
    /// instructions back (and the last one's cost is under a tenth of the host time since).
    pub fn maybe_checkpoint(&mut self, m: &mut Machine) {
        let icount = m.cpu.icount;
        let last = self.checkpoints.iter().rev().find(|c| c.icount <= icount).map(|c| c.icount);
        let cheap = self.last_taken.is_none_or(|t| t.elapsed() >= self.last_cost * 10);
        if last.is_none_or(|l| icount - l >= self.interval && cheap) {
            self.checkpoint(m);
        }
    }

    fn set_mute(&self, on: bool) {
        if let Some(m) = &self.mute {
            m.store(on, Ordering::Relaxed);
        }
    }

    /// Runs forward up to `limit` (an absolute instruction count) like [`Machine::run`], behind the
    /// frontier with the logged inputs and output muted.
    pub fn run_forward(&mut self, m: &mut Machine, limit: u64) -> RunOutcome {
        if m.cpu.icount < self.frontier {
            self.set_mute(true);
            let out = m.run(Some(limit.min(self.frontier)));
            self.set_mute(false);
            if out != RunOutcome::InstructionLimit || m.cpu.icount >= limit {
                return out;
            }
        }
        self.go_live(m);
        let out = m.run(Some(limit));
        self.frontier = self.frontier.max(m.cpu.icount);
        out
    }

    /// At (or past) the frontier: live input back, logged inputs no longer scripted.
    fn go_live(&mut self, m: &mut Machine) {
        if m.cpu.icount < self.frontier {
            return;
        }
        // Inputs the script still holds were seen at the frontier's slot at the latest: deliver them.
        let rest: Vec<StampedInput> = m.script.drain(..).collect();
        for i in rest {
            m.inject(i.input);
        }
        self.log.borrow_mut().replaying = false;
        if let Some(rx) = self.parked.take() {
            m.input = Some(rx);
            m.next_input = m.slot();
        }
    }

    /// Puts the machine at instruction count `target`: restores the last checkpoint at or before it
    /// and re-executes, with no debugger breakpoint or watchpoint active. Returns the count reached,
    /// which is `target` unless `target` is before the earliest checkpoint (then that checkpoint's) or
    /// the guest stopped on the way.
    pub fn goto(&mut self, m: &mut Machine, target: u64) -> Result<u64, String> {
        let saved = m.interp_mut().map(|i| {
            let s = std::mem::take(&mut i.stops);
            let w = i.mmu.debug.host_watches().to_vec();
            i.mmu.debug.set_host_watches(Vec::new());
            (s, w)
        });
        let r = self.goto_inner(m, target);
        if let (Some(i), Some((s, w))) = (m.interp_mut(), saved) {
            i.stops = s;
            // Pages cached while no watchpoint was set must not stay in the TLB.
            crate::gdb::flush_watched(i, &w);
            i.mmu.debug.set_host_watches(w);
            i.mmu.debug.host_hit = None;
        }
        r
    }

    fn goto_inner(&mut self, m: &mut Machine, target: u64) -> Result<u64, String> {
        self.restore_before(m, target)?;
        if m.cpu.icount < target {
            self.set_mute(true);
            let out = m.run(Some(target));
            self.set_mute(false);
            if out != RunOutcome::InstructionLimit {
                return Err(format!("re-execution stopped at {}: {out:?}", m.cpu.icount));
            }
        }
        Ok(m.cpu.icount)
    }

    /// Restores the last checkpoint at or before `target` (the earliest if none) and sets up the
    /// replay of the inputs logged after it.
    pub fn restore_before(&mut self, m: &mut Machine, target: u64) -> Result<u64, String> {
        let idx = self.checkpoints.iter().rposition(|c| c.icount <= target).unwrap_or(0);
        let c = self.checkpoints.get(idx).ok_or("no checkpoint")?;
        if self.parked.is_none() {
            self.parked = m.input.take();
        }
        c.state.restore(m).map_err(|e| format!("restoring the checkpoint: {e}"))?;
        // The restored TLB may hold pages a debugger watches now: drop them.
        if let Some(i) = m.interp_mut() {
            let watched = i.mmu.debug.host_watches().to_vec();
            crate::gdb::flush_watched(i, &watched);
            i.mmu.debug.host_hit = None;
        }
        let mut l = self.log.borrow_mut();
        l.replaying = true;
        m.script = l.inputs[c.inputs.min(l.inputs.len())..].iter().cloned().collect();
        Ok(c.icount)
    }

    /// Checkpoint counts at or before `icount`, latest first.
    pub fn checkpoints_before(&self, icount: u64) -> Vec<u64> {
        self.checkpoints.iter().rev().filter(|c| c.icount <= icount).map(|c| c.icount).collect()
    }
}
