//! The differential run: generate cases, run them on every engine, compare against the reference, shrink and
//! report divergences.

use crate::case::{Case, Engine, ExceptionInfo, FinalState, FpState, GPR_NAMES, Mode, Outcome, f80_text};
use crate::disasm;
use crate::generator::{Family, GenConfig, Generator};
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

/// Settings of a difftest run; maps onto `ferrite difftest --seed --cases --max-insns --modes --families`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Run seed; case `i` is a pure function of `(seed, i)` (and the host's CPU features).
    pub seed: u64,
    /// Number of cases.
    pub cases: u64,
    /// Maximum instructions per case (each case has 1..=max_insns).
    pub max_insns: usize,
    /// Modes to test.
    pub modes: Vec<Mode>,
    /// Families to test; empty means the integer families ([`Family::INTEGER`], as before the FP/SIMD
    /// families existed, so old seeds reproduce).
    pub families: Vec<Family>,
    /// Percentage of cases mixing instructions of all selected families.
    pub mixed_percent: u64,
    /// How many divergences to keep fully formatted in the report.
    pub max_reports: usize,
    /// Shrink divergent cases to the first differing instruction.
    pub shrink: bool,
    /// Only encodings of these mnemonics (empty: every one of the families): for a run aimed at
    /// the forms one engine implements specially (the JIT's vector IR forms).
    pub mnemonics: Vec<iced_x86::Mnemonic>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 1,
            cases: 10_000,
            max_insns: 8,
            modes: Mode::ALL.to_vec(),
            families: Vec::new(),
            mixed_percent: 25,
            max_reports: 10,
            shrink: true,
            mnemonics: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a comma-separated family list ("alu,shift,x87"). Group names: "all" (every family), "int"
    /// (the integer families, [`Family::INTEGER`]), "fp" or "simd" (x87, MMX and SSE.., [`Family::FP_SIMD`]),
    /// "vex" or "avx" (AVX, AVX2, FMA, F16C: [`Family::VEX`]).
    /// The empty string gives the empty list (the default: the integer families).
    pub fn parse_families(s: &str) -> Result<Vec<Family>, String> {
        let mut out: Vec<Family> = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let group: Vec<Family> = match name.to_ascii_lowercase().as_str() {
                "all" => Family::ALL.to_vec(),
                "int" | "integer" | "gpr" => Family::INTEGER.to_vec(),
                "fp" | "simd" | "fpsimd" => Family::FP_SIMD.to_vec(),
                "vex" | "x86-64-v3" => Family::VEX.to_vec(),
                _ => vec![name.parse()?],
            };
            for f in group {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    /// Parses a comma-separated mode list ("long64,compat32"; "all" for both).
    pub fn parse_modes(s: &str) -> Result<Vec<Mode>, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("all") {
            return Ok(Mode::ALL.to_vec());
        }
        s.split(',').map(|m| m.trim().parse()).collect()
    }

    /// The generator configuration this run uses.
    pub fn gen_config(&self) -> GenConfig {
        GenConfig {
            max_insns: self.max_insns.max(1),
            families: if self.families.is_empty() { Family::INTEGER.to_vec() } else { self.families.clone() },
            modes: if self.modes.is_empty() { Mode::ALL.to_vec() } else { self.modes.clone() },
            mixed_percent: self.mixed_percent,
            low_region: crate::generator::host_allows_low_region(),
            mnemonics: self.mnemonics.clone(),
        }
    }
}

/// Counters for one (family, mode) group. A case run on `k` engines under test counts `k` comparisons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Cases generated.
    pub cases: u64,
    /// Cases where the reference stopped on an exception.
    pub ref_exceptions: u64,
    /// Comparisons that matched.
    pub passed: u64,
    /// Comparisons that differed.
    pub diverged: u64,
    /// Comparisons where the engine under test reported `Unsupported`.
    pub unsupported: u64,
    /// Cases where an engine (reference or under test) reported a harness error.
    pub harness_errors: u64,
    /// Comparisons that differed only because the native reference reached memory the host process has
    /// mapped outside the case (the runner's own trampoline pages, the host stack): not comparable.
    pub host_memory: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.cases += o.cases;
        self.ref_exceptions += o.ref_exceptions;
        self.passed += o.passed;
        self.diverged += o.diverged;
        self.unsupported += o.unsupported;
        self.harness_errors += o.harness_errors;
        self.host_memory += o.host_memory;
    }
}

/// One divergence between an engine and the reference.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// Run seed.
    pub seed: u64,
    /// Case index.
    pub index: u64,
    /// Engine that disagreed with the reference.
    pub engine: String,
    /// Family of the case (`None` = mixed).
    pub family: Option<Family>,
    /// The (shrunk) case.
    pub case: Case,
    /// Number of instructions in the original case.
    pub original_insns: usize,
    /// Index (0-based) of the first instruction whose inclusion makes the engines disagree, if shrinking
    /// found it.
    pub first_bad_insn: Option<usize>,
    /// Reference result for the shrunk case.
    pub reference: FinalState,
    /// Engine result for the shrunk case.
    pub actual: FinalState,
    /// Names of the differing fields.
    pub fields: Vec<String>,
    /// Human-readable reproducer.
    pub text: String,
}

/// Result of [`run_difftest`].
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Seed of the run.
    pub seed: u64,
    /// Name of the reference engine and the engines compared against it.
    pub reference: String,
    /// Engines under test.
    pub engines: Vec<String>,
    /// Counters per family ("mixed" for mixed cases) and mode.
    pub groups: BTreeMap<(String, Mode), Counts>,
    /// First divergences (up to `Config::max_reports`), formatted.
    pub divergences: Vec<Divergence>,
    /// Unsupported reports: (engine, message) -> (count, first case index).
    pub unsupported: BTreeMap<(String, String), (u64, u64)>,
    /// Harness errors: (case index, engine, message), first `max_reports`.
    pub harness_errors: Vec<(u64, String, String)>,
    /// Families requested but skipped (host CPU lacks them), with the reason.
    pub skipped_families: Vec<(Family, String)>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time spent inside the reference engine.
    pub reference_time: Duration,
}

impl Report {
    /// Totals over all groups.
    pub fn totals(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.groups.values() {
            t.add(c);
        }
        t
    }

    /// No divergences and no harness errors.
    pub fn is_clean(&self) -> bool {
        let t = self.totals();
        t.diverged == 0 && t.harness_errors == 0
    }

    /// Reference throughput in cases per second (time inside the reference engine only).
    pub fn reference_cases_per_sec(&self) -> f64 {
        self.totals().cases as f64 / self.reference_time.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.totals();
        writeln!(
            f,
            "difftest seed {}: {} cases, reference `{}` vs [{}] in {:.2?} ({:.0} cases/s on the reference)",
            self.seed,
            t.cases,
            self.reference,
            self.engines.join(", "),
            self.elapsed,
            self.reference_cases_per_sec()
        )?;
        for (fam, why) in &self.skipped_families {
            writeln!(f, "  skipped family {fam}: {why}")?;
        }
        writeln!(
            f,
            "  {:<10} {:<9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "family", "mode", "cases", "exc", "pass", "DIFF", "unsup", "harness"
        )?;
        for ((fam, mode), c) in &self.groups {
            writeln!(
                f,
                "  {:<10} {:<9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
                fam,
                mode.to_string(),
                c.cases,
                c.ref_exceptions,
                c.passed,
                c.diverged,
                c.unsupported,
                c.harness_errors
            )?;
        }
        writeln!(
            f,
            "  {:<10} {:<9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "total", "", t.cases, t.ref_exceptions, t.passed, t.diverged, t.unsupported, t.harness_errors
        )?;
        if t.host_memory > 0 {
            writeln!(
                f,
                "  {} case(s) reached host memory outside the case on the native side (not comparable)",
                t.host_memory
            )?;
        }
        if !self.unsupported.is_empty() {
            writeln!(f, "unsupported (engine: message x count, first case):")?;
            for ((e, m), (n, first)) in &self.unsupported {
                writeln!(f, "  {e}: {m} x{n} (case {first})")?;
            }
        }
        for (i, e, m) in &self.harness_errors {
            writeln!(f, "harness error: case {i} on `{e}`: {m}")?;
        }
        for d in &self.divergences {
            writeln!(f, "{}", d.text)?;
        }
        if t.diverged as usize > self.divergences.len() {
            writeln!(f, "({} more divergences not shown)", t.diverged as usize - self.divergences.len())?;
        }
        Ok(())
    }
}

/// Whether a difference comes from the native side touching memory the host process maps outside the case
/// (the runner's trampoline pages, the host's stack at the top of the user half): the engine under test
/// took a #PF at an address no page of the case covers, and the native run either did not fault there
/// (it read or wrote the host's page) or faulted there with the P bit set (a host page it could not use).
/// Such a case says nothing about the engine: both sides modelled different address spaces.
pub fn reached_host_memory(case: &Case, reference: &FinalState, actual: &FinalState) -> bool {
    let Some(ExceptionInfo { vector: 14, fault_addr: Some(addr), rip, .. }) = actual.exception else {
        return false;
    };
    let page = addr & !(crate::case::PAGE_SIZE - 1);
    let (code_lo, code_end) = case.code_pages();
    let in_case =
        (code_lo..code_end).contains(&page) || case.data.iter().any(|r| (r.addr..r.end()).contains(&addr));
    if in_case {
        return false;
    }
    match &reference.exception {
        None => true,
        Some(e) if e.vector == 14 && e.fault_addr == Some(addr) => e.error_code.is_some_and(|c| c & 1 == 1),
        Some(e) => e.rip != rip,
    }
}

/// Compares two final states under the rules of [`crate::case`]; returns the names of the differing fields.
pub fn compare(mode: Mode, reference: &FinalState, actual: &FinalState) -> Vec<String> {
    let mut d = Vec::new();
    let (nregs, mask) = match mode {
        Mode::Long64 => (16, u64::MAX),
        Mode::Compat32 => (8, 0xFFFF_FFFF),
    };
    if reference.rip & mask != actual.rip & mask {
        d.push("rip".to_string());
    }
    for (i, name) in GPR_NAMES.iter().enumerate().take(nregs) {
        if reference.gprs[i] & mask != actual.gprs[i] & mask {
            d.push(name.to_string());
        }
    }
    if reference.rflags & !crate::case::RFLAGS_RF != actual.rflags & !crate::case::RFLAGS_RF {
        d.push("rflags".to_string());
    }
    match (&reference.exception, &actual.exception) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            let addr_differs =
                matches!((a.fault_addr, b.fault_addr), (Some(x), Some(y)) if x & mask != y & mask);
            // The host kernel maps parts of the upper canonical half (supervisor-only), which the engines
            // under test do not model: for a #PF there, the P bit says only whether the host kernel has
            // something at that address, so it is not compared.
            let kernel_half_pf = a.vector == 14 && a.fault_addr.is_some_and(|x| x >> 63 == 1);
            let code_mask = if kernel_half_pf { !1u64 } else { !0u64 };
            if a.vector != b.vector
                || a.error_code.map(|e| e & code_mask) != b.error_code.map(|e| e & code_mask)
                || a.rip & mask != b.rip & mask
                || addr_differs
            {
                d.push("exception".to_string());
            }
        }
        _ => d.push("exception".to_string()),
    }
    match (&reference.fp, &actual.fp) {
        (None, None) => {}
        (Some(a), Some(b)) => d.extend(a.diff(b)),
        _ => d.push("fp".to_string()),
    }
    if reference.data.len() != actual.data.len() {
        d.push("memory-layout".to_string());
    } else {
        for (a, b) in reference.data.iter().zip(&actual.data) {
            if a.addr != b.addr || a.bytes != b.bytes {
                d.push(format!("mem@{:#x}", a.addr));
            }
        }
    }
    d
}

fn flags_text(f: u64) -> String {
    const NAMES: [(u64, &str); 9] = [
        (0x1, "CF"),
        (0x4, "PF"),
        (0x10, "AF"),
        (0x40, "ZF"),
        (0x80, "SF"),
        (0x100, "TF"),
        (0x200, "IF"),
        (0x400, "DF"),
        (0x800, "OF"),
    ];
    let set: Vec<&str> = NAMES.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    format!("{:#x} [{}]", f, set.join(" "))
}

fn exc_text(e: &Option<ExceptionInfo>) -> String {
    match e {
        None => "none".into(),
        Some(x) => {
            let name = match x.vector {
                0 => "#DE",
                1 => "#DB",
                3 => "#BP",
                4 => "#OF",
                5 => "#BR",
                6 => "#UD",
                12 => "#SS",
                13 => "#GP",
                14 => "#PF",
                16 => "#MF",
                17 => "#AC",
                19 => "#XM",
                _ => "#?",
            };
            let mut s = format!("{name}({})", x.vector);
            if let Some(c) = x.error_code {
                let _ = write!(s, " err={c:#x}");
            }
            let _ = write!(s, " rip={:#x}", x.rip);
            if let Some(a) = x.fault_addr {
                let _ = write!(s, " cr2={a:#x}");
            }
            s
        }
    }
}

fn hex(v: u64, mode: Mode) -> String {
    match mode {
        Mode::Long64 => format!("{v:#018x}"),
        Mode::Compat32 => format!("{:#010x}", v & 0xFFFF_FFFF),
    }
}

/// Formats a divergence: reproducer, disassembly, initial state and both final states side by side.
#[allow(clippy::too_many_arguments)]
fn format_divergence(
    seed: u64,
    index: u64,
    family: Option<Family>,
    engine: &str,
    reference_name: &str,
    case: &Case,
    original_insns: usize,
    first_bad: Option<usize>,
    r: &FinalState,
    a: &FinalState,
    fields: &[String],
) -> String {
    let mode = case.mode;
    let mut s = String::new();
    let fam = family.map(|f| f.name()).unwrap_or("mixed");
    let _ = writeln!(
        s,
        "=== DIVERGENCE `{engine}` vs `{reference_name}`: seed {seed} case {index} (family {fam}, mode {mode})"
    );
    let insns = disasm::decode_all(&case.code, case.code_addr, mode.bitness());
    match first_bad {
        Some(k) => {
            let _ = writeln!(
                s,
                "shrunk to the first {} of {original_insns} instruction(s); first differing instruction is #{k} (marked >>)",
                insns.len()
            );
        }
        None => {
            let _ = writeln!(s, "not shrunk ({original_insns} instruction(s))");
        }
    }
    let _ = writeln!(s, "differing: {}", fields.join(", "));
    let _ = writeln!(s, "code (Intel syntax):");
    for (i, ins) in insns.iter().enumerate() {
        let start = (ins.ip() - case.code_addr) as usize;
        let raw: String = case.code[start..start + ins.len()].iter().map(|b| format!("{b:02x}")).collect();
        let mark = if Some(i) == first_bad { ">>" } else { "  " };
        let _ = writeln!(s, "{mark} #{i:<2} {:#010x}  {raw:<30} {}", ins.ip(), disasm::format_insn(ins));
    }
    let _ = writeln!(s, "   end {:#010x}", case.code_end());
    let nregs = if mode == Mode::Long64 { 16 } else { 8 };
    let _ = writeln!(s, "{:<10} {:<20} {:<20} {:<20}", "", "initial", reference_name, engine);
    for (i, name) in GPR_NAMES.iter().enumerate().take(nregs) {
        let mark = if fields.iter().any(|f| f == name) { "  <-- differs" } else { "" };
        let _ = writeln!(
            s,
            "{:<10} {:<20} {:<20} {:<20}{mark}",
            name,
            hex(case.regs.gprs[i], mode),
            hex(r.gprs[i], mode),
            hex(a.gprs[i], mode)
        );
    }
    let mark = |n: &str| if fields.iter().any(|f| f == n) { "  <-- differs" } else { "" };
    let _ = writeln!(
        s,
        "{:<10} {:<20} {:<20} {:<20}{}",
        "rip",
        hex(case.regs.rip, mode),
        hex(r.rip, mode),
        hex(a.rip, mode),
        mark("rip")
    );
    let _ = writeln!(s, "rflags     initial {}", flags_text(case.regs.rflags));
    let _ = writeln!(s, "           {reference_name:<7} {}", flags_text(r.rflags));
    let _ = writeln!(s, "           {engine:<7} {}{}", flags_text(a.rflags), mark("rflags"));
    let _ = writeln!(s, "exception  {reference_name:<7} {}", exc_text(&r.exception));
    let _ = writeln!(s, "           {engine:<7} {}{}", exc_text(&a.exception), mark("exception"));
    if let (Some(rf), Some(af)) = (&r.fp, &a.fp) {
        fp_section(&mut s, case.fp.as_ref(), rf, af, reference_name, engine, fields);
    }
    for (ri, (rr, ar)) in r.data.iter().zip(&a.data).enumerate() {
        if rr.bytes == ar.bytes {
            continue;
        }
        let init = case.data.get(ri).map(|d| d.bytes.as_slice()).unwrap_or(&[]);
        let mut shown = 0;
        let mut off = 0;
        while off < rr.bytes.len() && shown < 8 {
            let end = (off + 16).min(rr.bytes.len());
            if rr.bytes[off..end] != ar.bytes[off..end] {
                let h = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
                let _ = writeln!(
                    s,
                    "mem {:#010x} initial  {}",
                    rr.addr + off as u64,
                    h(init.get(off..end).unwrap_or(&[]))
                );
                let _ = writeln!(s, "           {reference_name:<8} {}", h(&rr.bytes[off..end]));
                let _ = writeln!(s, "           {engine:<8} {}  <-- differs", h(&ar.bytes[off..end]));
                shown += 1;
            }
            off = end;
        }
    }
    s
}

/// One FP/SIMD field of an [`FpState`] as text (for divergence reports).
fn fp_field(fp: &FpState, name: &str) -> String {
    match name {
        "fcw" => format!("{:#06x}", fp.fcw),
        "fsw" => format!("{:#06x} (top {})", fp.fsw, fp.top()),
        "ftw" => format!("{:#04x} (abridged, by physical register)", fp.ftw),
        "mxcsr" => format!("{:#010x}", fp.mxcsr),
        n if n.starts_with("xmm") => {
            let i: usize = n[3..].parse().unwrap_or(0);
            format!("{:#034x}", fp.xmm[i])
        }
        n if n.starts_with("st") => {
            let i: usize = n[2..].parse().unwrap_or(0);
            let tag = if fp.st_valid(i) { "" } else { " (empty)" };
            format!("{}{tag}", f80_text(&fp.st[i]))
        }
        _ => String::new(),
    }
}

/// The FP/SIMD part of a divergence report: the control/status words always, the registers that differ.
fn fp_section(
    s: &mut String,
    init: Option<&FpState>,
    r: &FpState,
    a: &FpState,
    reference_name: &str,
    engine: &str,
    fields: &[String],
) {
    let mut names: Vec<String> = ["fcw", "fsw", "ftw", "mxcsr"].iter().map(|n| n.to_string()).collect();
    for f in fields {
        if (f.starts_with("st") || f.starts_with("xmm")) && !names.contains(f) {
            names.push(f.clone());
        }
    }
    let _ = writeln!(s, "fp/simd state:");
    for n in &names {
        let mark = if fields.contains(n) { "  <-- differs" } else { "" };
        if let Some(i) = init {
            let _ = writeln!(s, "{n:<10} initial  {}", fp_field(i, n));
        }
        let _ =
            writeln!(s, "{:<10} {reference_name:<8} {}", if init.is_some() { "" } else { n }, fp_field(r, n));
        let _ = writeln!(s, "{:<10} {engine:<8} {}{mark}", "", fp_field(a, n));
    }
    if !fields.iter().any(|f| f.starts_with("st")) {
        let live: Vec<String> =
            (0..8).filter(|&i| r.st_valid(i)).map(|i| format!("st{i}={}", f80_text(&r.st[i]))).collect();
        if !live.is_empty() {
            let _ = writeln!(s, "x87 stack ({reference_name}): {}", live.join(" "));
        }
    }
}

/// Runs the reference and one engine on `case`; returns both states and the differing fields if they differ.
fn diff_once(
    reference: &mut dyn Engine,
    engine: &mut dyn Engine,
    case: &Case,
) -> Option<(FinalState, FinalState, Vec<String>)> {
    let r = reference.run(case);
    let a = engine.run(case);
    match (r, a) {
        (Outcome::Ran(r), Outcome::Ran(a)) => {
            let f = compare(case.mode, &r, &a);
            if f.is_empty() { None } else { Some((r, a, f)) }
        }
        _ => None,
    }
}

/// Shrinks a divergent case to the shortest prefix of its instructions that still diverges. Returns the
/// prefix case, the index of its last instruction and both states.
pub fn shrink(
    reference: &mut dyn Engine,
    engine: &mut dyn Engine,
    case: &Case,
) -> Option<(Case, usize, FinalState, FinalState, Vec<String>)> {
    let insns = disasm::decode_all(&case.code, case.code_addr, case.mode.bitness());
    for (k, ins) in insns.iter().enumerate() {
        let end = (ins.ip() - case.code_addr) as usize + ins.len();
        let prefix = case.truncated(end);
        if let Some((r, a, f)) = diff_once(reference, engine, &prefix) {
            return Some((prefix, k, r, a, f));
        }
    }
    None
}

/// Runs a differential test. `engines[0]` is the reference (normally [`crate::NativeEngine`]); every other
/// engine is compared against it. With a single engine the cases are only run (useful for timing).
pub fn run_difftest(config: &Config, engines: &mut [&mut dyn Engine]) -> Report {
    let start = Instant::now();
    let generator = Generator::new(config.gen_config());
    let mut report =
        Report { seed: config.seed, skipped_families: generator.skipped().to_vec(), ..Report::default() };
    let Some((reference, others)) = engines.split_first_mut() else {
        return report;
    };
    report.reference = reference.name().to_string();
    report.engines = others.iter().map(|e| e.name().to_string()).collect();
    for index in 0..config.cases {
        let g = generator.generate(config.seed, index);
        let fam = g.family.map(|f| f.name().to_string()).unwrap_or_else(|| "mixed".into());
        let key = (fam, g.case.mode);
        let t0 = Instant::now();
        let r = reference.run(&g.case);
        report.reference_time += t0.elapsed();
        let counts = report.groups.entry(key.clone()).or_default();
        counts.cases += 1;
        let rstate = match r {
            Outcome::Ran(s) => s,
            Outcome::Unsupported(m) | Outcome::HarnessError(m) => {
                counts.harness_errors += 1;
                if report.harness_errors.len() < config.max_reports.max(1) {
                    report.harness_errors.push((index, report.reference.clone(), m));
                }
                continue;
            }
        };
        if rstate.exception.is_some() {
            counts.ref_exceptions += 1;
        }
        for e in others.iter_mut() {
            let a = e.run(&g.case);
            let counts = report.groups.entry(key.clone()).or_default();
            match a {
                Outcome::Ran(a) => {
                    let fields = compare(g.case.mode, &rstate, &a);
                    if fields.is_empty() {
                        counts.passed += 1;
                        continue;
                    }
                    if reached_host_memory(&g.case, &rstate, &a) {
                        counts.host_memory += 1;
                        continue;
                    }
                    counts.diverged += 1;
                    if report.divergences.len() >= config.max_reports {
                        continue;
                    }
                    let n = g.insn_offsets.len();
                    let shrunk =
                        if config.shrink { shrink(&mut **reference, &mut **e, &g.case) } else { None };
                    let (case, first_bad, r, a, fields) = match shrunk {
                        Some((c, k, r, a, f)) => (c, Some(k), r, a, f),
                        None => (g.case.clone(), None, rstate.clone(), a, fields),
                    };
                    let text = format_divergence(
                        config.seed,
                        index,
                        g.family,
                        e.name(),
                        &report.reference,
                        &case,
                        n,
                        first_bad,
                        &r,
                        &a,
                        &fields,
                    );
                    report.divergences.push(Divergence {
                        seed: config.seed,
                        index,
                        engine: e.name().to_string(),
                        family: g.family,
                        case,
                        original_insns: n,
                        first_bad_insn: first_bad,
                        reference: r,
                        actual: a,
                        fields,
                        text,
                    });
                }
                Outcome::Unsupported(m) => {
                    counts.unsupported += 1;
                    let entry = report.unsupported.entry((e.name().to_string(), m)).or_insert((0, index));
                    entry.0 += 1;
                }
                Outcome::HarnessError(m) => {
                    counts.harness_errors += 1;
                    if report.harness_errors.len() < config.max_reports.max(1) {
                        report.harness_errors.push((index, e.name().to_string(), m));
                    }
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    report
}
