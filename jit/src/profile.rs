//! An opt-in count of the instructions generated code retires through [`crate::call_handler`]
//! (the ones not lowered inline), and of the SSE/VEX forms it computes through
//! `lower_sse::sse_helper` (inline in control flow, but a call per instruction), for choosing what
//! to lower next.
//!
//! `FERRITE_JIT_PROFILE=1` prints, when the process exits, the most frequent forms (iced's `Code`,
//! whether operand 0 is memory, the code size) with their share of all handler calls to stderr;
//! any other non-empty value is a file the table is appended to (for benchmark scripts that keep
//! only the console). Without the variable the cost is one relaxed atomic load per handler call.
//! Statistics only: nothing here reaches the guest.

use cpu::exec::{Insn, Opnd};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

/// 0: not decided yet; 1: off; 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Counts per form key (see [`key`]).
static COUNTS: Mutex<Option<HashMap<u32, u64>>> = Mutex::new(None);

/// Where the table goes (`None`: stderr).
static TARGET: OnceLock<Option<String>> = OnceLock::new();

/// Forms printed.
const TOP: usize = 50;

/// Set in a key of an `sse_helper` call (see [`count_helper`]).
const HELPER: u32 = 1 << 30;

/// `code | mem << 16 | code size << 17`.
fn key(insn: &Insn) -> u32 {
    let mem = (insn.op[0] == Opnd::Mem) as u32;
    let bits = match insn.i.code_size() {
        iced_x86::CodeSize::Code16 => 0,
        iced_x86::CodeSize::Code32 => 1,
        _ => 2,
    };
    insn.i.code() as u32 | mem << 16 | bits << 17
}

/// Whether profiling is on (decided once, from the environment).
fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let v = std::env::var("FERRITE_JIT_PROFILE").ok().filter(|v| !v.is_empty() && v != "0");
            let on = v.is_some();
            if on {
                let _ = TARGET.set(v.filter(|v| v != "1"));
                *COUNTS.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
                // SAFETY: `report` is an `extern "C" fn()` that does not unwind (it catches
                // everything it could panic on by ignoring I/O errors and poisoned locks).
                unsafe { libc::atexit(report) };
            }
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Counts one handler call of `insn` (when profiling is on). Inlined into the handler call, so
/// that without profiling it is one load and a branch (as a call it was 2% of a warm Linux boot).
#[inline(always)]
pub(crate) fn count(insn: &Insn) {
    if STATE.load(Ordering::Relaxed) != 1 {
        count_slow(insn);
    }
}

#[cold]
#[inline(never)]
fn count_slow(insn: &Insn) {
    if !enabled() {
        return;
    }
    if let Some(m) = COUNTS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        *m.entry(key(insn)).or_default() += 1;
    }
}

/// Counts one `sse_helper` call with the helper's `code` word (mnemonic, VEX and width bits: the
/// caller masks it to what names the form), when profiling is on.
#[inline(always)]
pub(crate) fn count_helper(code: u32) {
    if STATE.load(Ordering::Relaxed) != 1 {
        count_helper_slow(code);
    }
}

#[cold]
#[inline(never)]
fn count_helper_slow(code: u32) {
    if !enabled() {
        return;
    }
    if let Some(m) = COUNTS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        *m.entry(HELPER | (code & !HELPER)).or_default() += 1;
    }
}

/// The name of a form key: an iced `Code` with its operand and size notes, or an `sse_helper`
/// form (its mnemonic, `vex` and `wide` for a VEX.256 or 64-bit-GPR form).
fn name(k: u32) -> String {
    if k & HELPER != 0 {
        let m = crate::lower::helper_form_name(k & !HELPER);
        return format!("sse_helper {m}");
    }
    let code = iced_x86::Code::values().nth((k & 0xffff) as usize).unwrap_or(iced_x86::Code::INVALID);
    let mem = if k >> 16 & 1 != 0 { "m" } else { "r" };
    let bits = [16, 32, 64][(k >> 17) as usize & 3];
    format!("{code:?} op0={mem} code{bits}")
}

/// The table: the [`TOP`] most frequent forms, weighted by count.
fn table() -> String {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default();
    let total: u64 = counts.values().sum();
    let mut v: Vec<(u32, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let helper: u64 = v.iter().filter(|(k, _)| k & HELPER != 0).map(|(_, n)| n).sum();
    let mut s = format!(
        "jit profile: {} instructions retired through call_handler, {helper} sse_helper calls\n",
        total - helper
    );
    for (k, n) in v.into_iter().take(TOP) {
        s += &format!("jit profile: {:>6.2}% {n:>12} {}\n", n as f64 * 100.0 / total.max(1) as f64, name(k));
    }
    s
}

extern "C" fn report() {
    let s = table();
    match TARGET.get().cloned().flatten() {
        Some(path) => {
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(s.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(s.as_bytes());
        }
    }
}
