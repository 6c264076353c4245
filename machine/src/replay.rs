//! Replay (`ferrite replay FILE`): re-executes a [`Recording`] on a machine built from its
//! configuration, giving it the recorded inputs at their slots, and checks the state at every
//! checkpoint and at the end. The first mismatch stops the replay with the count, the parts that differ
//! and the CPU state; [`crate::lockstep::bisect`] then finds the instruction (the frontend re-runs
//! from the start to the last good checkpoint, under this engine and the interpreter).

use crate::record::{Checkpoint, Recording, StateHashes, state_hashes};
use crate::{Machine, RunOutcome};

/// Where a replay first disagreed with its recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The recorded check that failed (count, slot, hashes).
    pub recorded: Checkpoint,
    /// What the replay had there.
    pub replayed: Checkpoint,
    /// How the replay's run ended, if it ended before the check.
    pub outcome: Option<RunOutcome>,
    /// The last check that passed (or where the replay started).
    pub good: u64,
    /// One line: what differs.
    pub summary: String,
    /// The replaying CPU's registers there.
    pub dump: String,
}

/// A replay that matched its recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    /// How the run ended (as recorded).
    pub outcome: RunOutcome,
    /// Checkpoints checked (the end included).
    pub checks: usize,
    /// The final state's hashes.
    pub hashes: StateHashes,
}

fn here(m: &Machine) -> Checkpoint {
    Checkpoint { icount: m.cpu.icount, slot: m.slot(), hashes: state_hashes(m) }
}

fn same_end(a: &RunOutcome, b: &RunOutcome) -> bool {
    match (a, b) {
        (RunOutcome::Stopped { reason: x, .. }, RunOutcome::Stopped { reason: y, .. }) => x == y,
        (x, y) => x == y,
    }
}

fn mismatch(
    m: &Machine,
    recorded: Checkpoint,
    good: u64,
    outcome: Option<RunOutcome>,
    what: String,
) -> Mismatch {
    let replayed = here(m);
    let parts = recorded.hashes.differences(&replayed.hashes);
    let mut summary = what;
    if (replayed.icount, replayed.slot) != (recorded.icount, recorded.slot) {
        summary += &format!(
            "; at count {} slot {} (recorded: count {} slot {})",
            replayed.icount, replayed.slot, recorded.icount, recorded.slot
        );
    }
    if !parts.is_empty() {
        summary += &format!("; differing state: {}", parts.join(", "));
    }
    Mismatch { recorded, replayed, outcome, good, summary, dump: m.cpu.dump() }
}

/// Replays `rec` on `m`, built from its configuration (at power-on, or restored from a snapshot taken
/// during the recorded run or a replay of it: inputs and checks before its slot are skipped).
pub fn replay(m: &mut Machine, rec: &Recording) -> Result<Matched, Box<Mismatch>> {
    let start_slot = m.slot();
    m.replay_inputs(rec.inputs.iter().filter(|s| s.slot >= start_slot).cloned());
    let mut good = m.cpu.icount;
    let start = good;
    let mut checks = 0;
    for cp in rec.checkpoints.iter().filter(|c| c.icount > start) {
        let out = m.run(Some(cp.icount));
        if out != RunOutcome::InstructionLimit {
            let what = format!("the replay ended ({out:?}) before the check at count {}", cp.icount);
            return Err(Box::new(mismatch(m, *cp, good, Some(out), what)));
        }
        let now = here(m);
        if now != *cp {
            let what = format!("state differs from the recording at count {}", cp.icount);
            return Err(Box::new(mismatch(m, *cp, good, None, what)));
        }
        good = cp.icount;
        checks += 1;
    }
    let end = &rec.end;
    // A recorded exit, quit or stop happened at its count: give the run one more instruction so the
    // limit does not end it first (if the replay does not end there, that instruction shows it).
    let extra = u64::from(end.outcome != RunOutcome::InstructionLimit);
    let out = m.run(Some(end.at.icount.saturating_add(extra)));
    let now = here(m);
    if !same_end(&out, &end.outcome) || now != end.at {
        let what = format!("the replay ended with {out:?}, the recording with {:?}", end.outcome);
        return Err(Box::new(mismatch(m, end.at, good, Some(out), what)));
    }
    Ok(Matched { outcome: out, checks: checks + 1, hashes: now.hashes })
}
