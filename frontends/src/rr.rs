//! Record/replay, snapshot files and lockstep on the command line: `run`'s `--seed`, `--record`,
//! `--snapshot-at`, `--restore`, `--lockstep`, and the `replay` subcommand (docs/DEBUGGING.md).
//!
//! Exit status of `replay`: 0 when the replay matched its recording, 3 when it did not (the first
//! mismatch, then the bisection's report, on stderr), 2 for a recording that cannot be used. `run
//! --lockstep` exits 3 when the engines diverge.

use crate::{BuildOptions, Built, Cli, Command, RunArgs, build_machine, console, finish};
use machine::lockstep::{Lockstep, LockstepOutcome};
use machine::monitor::{self, Control};
use machine::record::{DEFAULT_INTERVAL, RecordConfig, Recorder, Recording};
use machine::{Machine, RunOutcome};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::Receiver;
use std::time::Instant;

/// Exit status when a replay or lockstep run finds a divergence.
const DIVERGED: u8 = 3;

/// `run`'s record/replay, snapshot and lockstep options.
#[derive(clap::Args)]
pub struct RrArgs {
    /// Seed of RDRAND/RDSEED: the guest's random numbers are a function of it (never host entropy).
    #[arg(long, value_name = "N", default_value_t = machine::DEFAULT_SEED)]
    pub seed: u64,
    /// Record the run to FILE for `ferrite replay`: every input with its instruction count, the
    /// configuration, image hashes, periodic state hashes. Disks are opened through snapshot=on
    /// overlays (the images stay unchanged, so the replay starts from the same bytes).
    /// With --lockstep, the JIT's run is recorded.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Retired instructions between two state checks of a recording.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_INTERVAL, value_parser = clap::value_parser!(u64).range(1..))]
    pub record_interval: u64,
    /// Save the whole machine to FILE when N instructions have retired (restore with --restore).
    #[arg(long, num_args = 2, value_names = ["N", "FILE"])]
    pub snapshot_at: Vec<String>,
    /// Start from a snapshot file saved by --snapshot-at (the machine must be configured as it was then).
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// Run the JIT and the interpreter side by side on the same guest and input, compare their whole
    /// states every --lockstep-interval instructions, and on a difference find the first instruction
    /// after which they differ and print both states (exit status 3). Disks go through overlays.
    #[arg(long)]
    pub lockstep: bool,
    /// Retired instructions between two comparisons under --lockstep.
    #[arg(long, value_name = "N", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub lockstep_interval: u64,
    /// Testing divergence detection: flips a byte at the top of RAM when N instructions have retired,
    /// in the interpreter of a lockstep pair or in the replaying machine.
    #[arg(long, value_name = "N", hide = true)]
    pub debug_inject_divergence: Option<u64>,
}

impl RrArgs {
    /// Whether disks must go through overlays.
    pub fn needs_overlays(&self) -> bool {
        self.record.is_some() || self.lockstep
    }
}

/// The test hook behind `--debug-inject-divergence`.
fn inject(m: &mut Machine, at: Option<u64>) {
    if let Some(at) = at {
        m.inject_fault_at(
            at,
            Box::new(|_, board| {
                let ram = board.ram.as_mut_slice();
                if let Some(b) = ram.last_mut() {
                    *b ^= 0x5a;
                }
            }),
        );
    }
}

/// `--snapshot-at N FILE`.
pub(crate) fn snapshot_at(a: &RrArgs) -> Result<Option<(u64, PathBuf)>, String> {
    match a.snapshot_at.as_slice() {
        [] => Ok(None),
        [n, f] => n
            .parse::<u64>()
            .map(|n| Some((n, PathBuf::from(f))))
            .map_err(|_| format!("--snapshot-at: '{n}' is not an instruction count")),
        _ => Err("--snapshot-at takes N FILE".into()),
    }
}

pub(crate) fn save_snapshot(m: &Machine, path: &std::path::Path) -> Result<(), String> {
    let s = machine::snapfile::save_file(m, path)
        .map_err(|e| format!("--snapshot-at {}: {e}", path.display()))?;
    eprintln!(
        "ferrite: snapshot at {} instructions written to {} ({} of {} RAM pages stored, {} bytes)",
        m.cpu.icount,
        path.display(),
        s.pages,
        s.total_pages,
        s.bytes
    );
    Ok(())
}

/// The `run` arguments a recording keeps: all but those about recording, lockstep and snapshots
/// (`--restore` stays: the recording starts from that snapshot), with `--rtc` replaced by the time it
/// gave (`now` is the host clock, recorded as a value).
fn recorded_args(rtc: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(2);
    while let Some(a) = args.next() {
        let skip = match a.as_str() {
            "--record" | "--rtc" | "--debug-inject-divergence" => 1,
            "--snapshot-at" => 2,
            "--lockstep" => 0,
            s if ["--record=", "--rtc=", "--debug-inject-divergence="].iter().any(|p| s.starts_with(p)) => 0,
            _ => {
                out.push(a);
                continue;
            }
        };
        for _ in 0..skip {
            args.next();
        }
    }
    out.push("--rtc".into());
    out.push(rtc.to_string());
    out
}

/// Creates the `--record` file (if asked for) and hooks it to `m`'s input port.
fn start_recording(
    args: &RunArgs,
    m: &mut Machine,
    images: Vec<(String, u64)>,
) -> Result<Option<Recorder>, ExitCode> {
    let Some(p) = &args.rr.record else { return Ok(None) };
    let config = RecordConfig {
        args: recorded_args(args.rtc),
        cwd: std::env::current_dir().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default(),
        accel: m.engine().name().into(),
        interval: args.rr.record_interval,
        images,
    };
    match Recorder::create(p, &config) {
        Ok(r) => {
            m.record_inputs(r.input_hook());
            Ok(Some(r))
        }
        Err(e) => {
            eprintln!("ferrite: --record {}: {e}", p.display());
            Err(ExitCode::from(2))
        }
    }
}

/// Writes the end of a recording and says what it holds.
fn finish_recording(r: Recorder, m: &Machine, outcome: &RunOutcome) -> Result<(), ExitCode> {
    let (inputs, checks, spent) = (r.inputs(), r.checkpoints, r.checkpoint_time.as_secs_f64());
    match r.finish(m, outcome) {
        Ok(bytes) => {
            eprintln!(
                "ferrite: recorded {inputs} inputs in {bytes} bytes; {checks} checkpoints took {spent:.2} s"
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("ferrite: --record: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Runs the monitor command lines typed on the console (Ctrl-A c), printing their output on stdout.
/// After `stop`, waits for lines until `cont` (the guest does not run). Returns the outcome when a
/// line ends the run (`quit`, or Ctrl-A x while stopped): the quit goes through the input port, so a
/// recording ends with it as with Ctrl-A x. Under `--record`, `loadvm` is refused: the recording would
/// not replay.
fn serve_monitor(m: &mut Machine, lines: &Receiver<String>, recording: bool) -> Option<RunOutcome> {
    let mut paused = false;
    loop {
        let line = if paused { lines.recv().ok()? } else { lines.try_recv().ok()? };
        if line == console::QUIT_LINE {
            // Ctrl-A x: the machine takes it from its own channel while it runs.
            if !paused {
                continue;
            }
            m.inject(machine::GuestInput::Quit);
            return Some(RunOutcome::Quit);
        }
        let (text, ctl) = if recording && line.split_whitespace().next() == Some("loadvm") {
            ("loadvm: not while recording (the recording would not replay)\n".to_string(), Control::None)
        } else {
            monitor::execute(m, None, &line)
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.write_all(b"(ferrite) ");
            let _ = out.flush();
        }
        match ctl {
            Control::Quit => {
                m.inject(machine::GuestInput::Quit);
                return Some(RunOutcome::Quit);
            }
            Control::Stop => paused = true,
            Control::Cont => paused = false,
            Control::None => {}
        }
    }
}

/// Runs the machine `run` built: plainly, recording, or in lockstep.
pub fn drive(args: &RunArgs, built: Built) -> ExitCode {
    let Built { mut m, images, .. } = built;
    let needs_counting = args.rr.record.is_some() || args.rr.lockstep;
    if needs_counting && m.engine().name() == "kvm" {
        eprintln!(
            "ferrite: --record and --lockstep need an instruction-counting engine (--accel interp or jit)"
        );
        return ExitCode::from(2);
    }
    let mut snap = match snapshot_at(&args.rr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rec = match start_recording(args, &mut m, images) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if args.rr.lockstep {
        return lockstep(args, m, snap, rec);
    }
    let (events, monitor_lines) = console::spawn_reader_with_monitor();
    m.attach_input(events);
    let started = Instant::now();
    let limit = args.max_instructions.unwrap_or(u64::MAX);
    let interval = args.rr.record_interval;
    let mut next_check = if rec.is_some() { m.cpu.icount.saturating_add(interval) } else { u64::MAX };
    let outcome = {
        let _raw = console::RawMode::enable();
        loop {
            let target = limit.min(next_check).min(snap.as_ref().map_or(u64::MAX, |s| s.0));
            let out = m.run(Some(target));
            if out != RunOutcome::InstructionLimit || m.cpu.icount >= limit {
                break out;
            }
            // The run came back early for a monitor line, or at a checkpoint or snapshot.
            if let Some(out) = serve_monitor(&mut m, &monitor_lines, rec.is_some()) {
                break out;
            }
            if let Some((n, path)) = &snap
                && m.cpu.icount >= *n
            {
                if let Err(e) = save_snapshot(&m, path) {
                    eprintln!("ferrite: {e}");
                    return ExitCode::from(2);
                }
                snap = None;
            }
            if m.cpu.icount >= next_check {
                if let Some(r) = rec.as_mut()
                    && let Err(e) = r.checkpoint(&m)
                {
                    eprintln!("ferrite: --record: {e}");
                    return ExitCode::from(2);
                }
                next_check = next_check.saturating_add(interval);
            }
        }
    };
    if let Some(r) = rec
        && let Err(code) = finish_recording(r, &m, &outcome)
    {
        return code;
    }
    finish(&m, args.stats, outcome, started)
}

/// `run --lockstep`: `a` (built under the JIT) and an interpreter twin; with `--record`, the JIT's run
/// is recorded (`rec` is already hooked to `a`'s input port), checkpoints included, so that a
/// divergence found here can be replayed (`ferrite replay --lockstep`) as often as needed.
fn lockstep(
    args: &RunArgs,
    mut a: Machine,
    snap: Option<(u64, PathBuf)>,
    mut rec: Option<Recorder>,
) -> ExitCode {
    let opts = BuildOptions { accel: Some(machine::Accel::Interp), console: false, overlay_disks: true };
    let mut b = match build_machine(args, opts) {
        Ok(b) => b.m,
        Err(code) => return code,
    };
    inject(&mut b, args.rr.debug_inject_divergence);
    a.attach_input(console::spawn_reader());
    let mut ls = Lockstep::new(a, b, args.rr.lockstep_interval, true);
    let started = Instant::now();
    let limit = args.max_instructions.unwrap_or(u64::MAX);
    let interval = args.rr.record_interval;
    let mut next_check = if rec.is_some() { ls.a.cpu.icount.saturating_add(interval) } else { u64::MAX };
    let mut snap = snap;
    let result = {
        let _raw = console::RawMode::enable();
        loop {
            let target = limit.min(next_check).min(snap.as_ref().map_or(u64::MAX, |s| s.0));
            match ls.run(Some(target)) {
                LockstepOutcome::Finished(RunOutcome::InstructionLimit) if ls.a.cpu.icount < limit => {
                    if let Some((n, path)) = &snap
                        && ls.a.cpu.icount >= *n
                    {
                        if let Err(e) = save_snapshot(&ls.a, path.as_path()) {
                            eprintln!("ferrite: {e}");
                            return ExitCode::from(2);
                        }
                        snap = None;
                    }
                    if ls.a.cpu.icount >= next_check {
                        if let Some(r) = rec.as_mut()
                            && let Err(e) = r.checkpoint(&ls.a)
                        {
                            eprintln!("ferrite: --record: {e}");
                            return ExitCode::from(2);
                        }
                        next_check = next_check.saturating_add(interval);
                    }
                }
                other => break other,
            }
        }
    };
    // The recording ends where the JIT stopped (before bisection moves the machines).
    let recorded_end = match &result {
        LockstepOutcome::Finished(out) => out.clone(),
        LockstepOutcome::Diverged { .. } => RunOutcome::InstructionLimit,
    };
    if let Some(r) = rec.take()
        && let Err(code) = finish_recording(r, &ls.a, &recorded_end)
    {
        return code;
    }
    match result {
        LockstepOutcome::Finished(out) => {
            eprintln!(
                "ferrite: lockstep: jit and interp agreed over {} comparisons ({} instructions)",
                ls.chunks, ls.a.cpu.icount
            );
            finish(&ls.a, args.stats, out, started)
        }
        LockstepOutcome::Diverged { good, bad, summary } => {
            crate::CONSOLE_MUTED.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("ferrite: lockstep: jit and interp differ at count {bad} (equal at {good}): {summary}");
            match ls.bisect(good, bad) {
                Ok(d) => eprintln!("ferrite: lockstep: first divergence: {}", d.report),
                Err(e) => eprintln!("ferrite: lockstep: bisection found nothing: {e}"),
            }
            ExitCode::from(DIVERGED)
        }
    }
}

/// Which engine replays.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum ReplayAccel {
    /// The reference interpreter.
    Interp,
    /// The Cranelift JIT.
    Jit,
}

/// `ferrite replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The recording (from `ferrite run --record FILE`).
    file: PathBuf,
    /// The engine (default: the one that recorded).
    #[arg(long, value_enum)]
    accel: Option<ReplayAccel>,
    /// Replay under the JIT and the interpreter side by side, comparing their whole states every
    /// --lockstep-interval instructions (and the end with the recording).
    #[arg(long)]
    lockstep: bool,
    /// Retired instructions between two comparisons under --lockstep.
    #[arg(long, value_name = "N", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    lockstep_interval: u64,
    /// Start from a snapshot file saved during the recorded run (or a replay of it).
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// On a mismatch, stop without bisecting to the first differing instruction.
    #[arg(long)]
    no_bisect: bool,
    /// Print statistics and the final state hash.
    #[arg(long)]
    stats: bool,
    /// Testing divergence detection (see `run`).
    #[arg(long, value_name = "N", hide = true)]
    debug_inject_divergence: Option<u64>,
}

fn to_accel(a: ReplayAccel) -> machine::Accel {
    match a {
        ReplayAccel::Interp => machine::Accel::Interp,
        ReplayAccel::Jit => machine::Accel::Jit,
    }
}

/// Builds the recording's machine under `accel` (console on stdout or discarded), restored from
/// `restore` when given, after checking its images against the recording's hashes.
fn replay_machine(
    rec: &Recording,
    run_args: &RunArgs,
    accel: machine::Accel,
    console: bool,
    restore: Option<&PathBuf>,
) -> Result<Machine, ExitCode> {
    let opts = BuildOptions { accel: Some(accel), console, overlay_disks: true };
    let Built { mut m, images, .. } = build_machine(run_args, opts)?;
    if images != rec.config.images {
        let what = rec
            .config
            .images
            .iter()
            .zip(&images)
            .find(|(r, n)| r != n)
            .map(|(r, _)| r.0.clone())
            .unwrap_or_else(|| "the list of images".into());
        eprintln!("ferrite replay: {what} is not what was recorded (its content hash differs)");
        return Err(ExitCode::from(2));
    }
    if let Some(p) = restore
        && let Err(e) = machine::snapfile::restore_file(&mut m, p)
    {
        eprintln!("ferrite replay: --restore {}: {e}", p.display());
        return Err(ExitCode::from(2));
    }
    Ok(m)
}

/// `ferrite replay FILE`.
pub fn replay(a: ReplayArgs) -> ExitCode {
    let rec = match Recording::read_file(&a.file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrite replay: {}: {e}", a.file.display());
            return ExitCode::from(2);
        }
    };
    // Relative paths in the recorded arguments are relative to where the recording was made.
    let restore = a.restore.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    if !rec.config.cwd.is_empty()
        && let Err(e) = std::env::set_current_dir(&rec.config.cwd)
    {
        eprintln!("ferrite replay: cannot enter the recording's directory {}: {e}", rec.config.cwd);
        return ExitCode::from(2);
    }
    let argv = ["ferrite".to_string(), "run".to_string()].into_iter().chain(rec.config.args.iter().cloned());
    let run_args = match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(Cli { command: Command::Run(r) }) => r,
        Ok(_) => unreachable_config(),
        Err(e) => {
            let text = e.render().to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments").to_string();
            eprintln!("ferrite replay: the recorded configuration does not parse: {line}");
            return ExitCode::from(2);
        }
    };
    let accel = match (a.accel, rec.config.accel.as_str()) {
        (Some(x), _) => to_accel(x),
        (None, "interp") => machine::Accel::Interp,
        (None, "jit") => machine::Accel::Jit,
        (None, other) => {
            eprintln!(
                "ferrite replay: recorded under '{other}', which cannot replay; use --accel interp or jit"
            );
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    if a.lockstep {
        return replay_lockstep(&a, &rec, &run_args, restore.as_ref(), started);
    }
    let mut m = match replay_machine(&rec, &run_args, accel, true, restore.as_ref()) {
        Ok(m) => m,
        Err(c) => return c,
    };
    inject(&mut m, a.debug_inject_divergence);
    match machine::replay::replay(&mut m, &rec) {
        Ok(done) => {
            let _ = finish(&m, a.stats, done.outcome.clone(), started);
            eprintln!(
                "ferrite replay: matched the recording: {} checks, {} instructions, ended {:?}",
                done.checks, m.cpu.icount, done.outcome
            );
            ExitCode::SUCCESS
        }
        Err(mm) => {
            crate::CONSOLE_MUTED.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("ferrite replay: mismatch: {}", mm.summary);
            eprintln!("{}", mm.dump);
            if !a.no_bisect {
                bisect_replay(&a, &rec, &run_args, accel, restore.as_ref(), mm.good, mm.recorded.icount);
            }
            ExitCode::from(DIVERGED)
        }
    }
}

fn unreachable_config() -> ! {
    // `ferrite run ...` always parses to the run command.
    eprintln!("ferrite replay: the recorded configuration is not a run command");
    std::process::exit(2)
}

/// After a mismatch: re-runs the recording to the last good check under the replaying engine and its
/// other engine, then bisects between them to the first differing instruction.
fn bisect_replay(
    a: &ReplayArgs,
    rec: &Recording,
    run_args: &RunArgs,
    accel: machine::Accel,
    restore: Option<&PathBuf>,
    good: u64,
    bad: u64,
) {
    let other = if accel == machine::Accel::Interp { machine::Accel::Jit } else { machine::Accel::Interp };
    let (Ok(mut x), Ok(mut y)) = (
        replay_machine(rec, run_args, accel, false, restore),
        replay_machine(rec, run_args, other, false, restore),
    ) else {
        return;
    };
    inject(&mut x, a.debug_inject_divergence);
    let start = x.slot();
    x.replay_inputs(rec.inputs.iter().filter(|s| s.slot >= start).cloned());
    let _ = x.run(Some(good));
    let snap = machine::snapfile::MemSnapshot::take(&x, None);
    let from = x.slot();
    let inputs: Vec<_> = rec.inputs.iter().filter(|s| s.slot >= from).cloned().collect();
    eprintln!(
        "ferrite replay: bisecting between counts {good} and {bad} ({} against {})",
        x.engine().name(),
        y.engine().name()
    );
    match machine::lockstep::bisect(&mut x, &mut y, &snap, &inputs, good, bad) {
        Ok(d) => eprintln!("ferrite replay: first divergence: {}", d.report),
        Err(e) => eprintln!(
            "ferrite replay: {e}: the engines agree, so the recording came from a different machine \
             (images, Ferrite build or host) or a different input"
        ),
    }
}

/// `replay --lockstep`: both engines replay the recording side by side.
fn replay_lockstep(
    a: &ReplayArgs,
    rec: &Recording,
    run_args: &RunArgs,
    restore: Option<&PathBuf>,
    started: Instant,
) -> ExitCode {
    let (mut x, mut y) = match (
        replay_machine(rec, run_args, machine::Accel::Jit, true, restore),
        replay_machine(rec, run_args, machine::Accel::Interp, false, restore),
    ) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(c), _) | (_, Err(c)) => return c,
    };
    inject(&mut y, a.debug_inject_divergence);
    let start = x.slot();
    for m in [&mut x, &mut y] {
        m.replay_inputs(rec.inputs.iter().filter(|s| s.slot >= start).cloned());
    }
    let mut ls = Lockstep::new(x, y, a.lockstep_interval, false);
    let extra = u64::from(rec.end.outcome != RunOutcome::InstructionLimit);
    match ls.run(Some(rec.end.at.icount.saturating_add(extra))) {
        LockstepOutcome::Finished(out) => {
            let _ = finish(&ls.a, a.stats, out.clone(), started);
            let hashes = machine::record::state_hashes(&ls.a);
            if ls.a.cpu.icount != rec.end.at.icount || hashes != rec.end.at.hashes {
                eprintln!(
                    "ferrite replay: jit and interp agree, but end at count {} with {:?}, the recording at {} ({})",
                    ls.a.cpu.icount,
                    out,
                    rec.end.at.icount,
                    rec.end.at.hashes.differences(&hashes).join(", ")
                );
                return ExitCode::from(DIVERGED);
            }
            eprintln!(
                "ferrite replay: matched the recording under jit and interp in lockstep ({} comparisons, {} instructions)",
                ls.chunks, ls.a.cpu.icount
            );
            ExitCode::SUCCESS
        }
        LockstepOutcome::Diverged { good, bad, summary } => {
            crate::CONSOLE_MUTED.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("ferrite replay: jit and interp differ at count {bad} (equal at {good}): {summary}");
            match ls.bisect(good, bad) {
                Ok(d) => eprintln!("ferrite replay: first divergence: {}", d.report),
                Err(e) => eprintln!("ferrite replay: bisection found nothing: {e}"),
            }
            ExitCode::from(DIVERGED)
        }
    }
}
