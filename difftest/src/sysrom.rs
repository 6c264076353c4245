//! System-level oracle: random privileged test programs built as ROMs and run under QEMU TCG and Ferrite.
//!
//! Privileged behaviour (segment loads and limits, descriptor types, call and interrupt gates, privilege
//! changes, paging permissions) cannot run natively in a user process, so for it each generated test is
//! a 64 KiB flat ROM image in the `test-roms` conventions (`common.inc` + `sys.inc`, assembled with nasm):
//!
//! 1. real mode → 32-bit protected mode with the standard GDT of `sys.inc` plus six **random extra
//!    descriptors** (data segments with random base/limit/type/DPL/G/B/P, code segments, call gates, LDT and
//!    TSS descriptors) at selectors 0x40..0x68, IDT of recording stubs, TSS with SS0:ESP0;
//! 2. a fill pattern over the data area 0x100000..0x120000, optional **paging** (4 KiB identity map with a
//!    test page of random P/RW/US flags at 0x110000, a 4 MiB PSE page at 0x400000 with random flags and
//!    sometimes reserved bits, random CR0.WP), random values in EBX ECX ESI EDI EBP;
//! 3. one **action**, at CPL 0 or (through IRET) CPL 3: load a segment register with a random selector and
//!    access memory through it near its limit; a far CALL/JMP to a random selector (call gates, code
//!    segments); INT n through a gate with random type/DPL/P/selector; a read or write of the paging test
//!    pages;
//!
//!    A third of the programs run in IA-32e mode instead (`longmode.inc`): random 16-byte IDT gates hit by
//!    INT n (type, DPL, P, selector, IST), a 4 KiB test page at 0x210000 with random PTE flags (XD without
//!    EFER.NXE and bits above MAXPHYADDR are reserved) read/written/executed, and segment-register loads;
//!    the same dump line with 64-bit values (plus `hrsp`, the handler's RSP, which shows IST use);
//! 4. the exception (if any) is recorded by the `sys.inc` stubs (vector, error code, EIP, CS, EFLAGS, ESP/SS
//!    on a privilege change, CR2), and a **dump line** is printed on port 0xE9:
//!    `DUMP vec=.. err=.. eip=.. cs=.. efl=.. esp=.. ss=.. cr2=.. ebx=.. ecx=.. esi=.. edi=.. ebp=.. fs=..
//!    gs=.. gdt=.. mem=.. pg=.. tss=.. tss2=.. d08=.. .. d68=..` (`gdt`, `mem`, `pg`, `tss`, `tss2` are
//!    checksums of the GDT, the data area with the page tables, the 4 MiB page's first 4 KiB, the harness TSS
//!    and the second task's TSS at 0x6000; `dXX` the high dword of GDT entry XX). The random TSS descriptors
//!    point at a valid 32-bit task entering at `task_target` (recorded as vector 0x32), so far CALL/JMP and
//!    task gates perform real task switches. A ring-3 action ends with `int 0x30` (a DPL3 gate), which
//!    shows as `vec=00000030`; a ring-0 action without exception leaves `vec=ffffffff`.
//!
//! [`run_qemu`] runs the ROM under `qemu-system-x86_64 -bios` (TCG) with the debug console on stdout;
//! Ferrite is run by the caller (this crate does not depend on `machine`, see ARCHITECTURE.md), e.g. with
//! `machine::Machine` and `MachineConfig::debugcon`. [`compare_dumps`] diffs the two dump lines and filters
//! known QEMU deviations from the SDM with the rules in [`QUIRKS`], each citing the SDM section that QEMU
//! departs from.

use crate::rng::Rng;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Number of random extra GDT descriptors (selectors 0x40, 0x48, ...).
pub const EXTRA_DESCS: usize = 6;
/// First extra selector (`SEL_FIRST` in `sys.inc`).
pub const SEL_FIRST: u16 = 0x40;

/// What a random descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescKind {
    /// Data segment (S = 1, type 0-7).
    Data,
    /// Code segment (S = 1, type 8-15), base 0, 4 GiB.
    Code,
    /// 32-bit call gate to `gate_target`.
    CallGate,
    /// Another system descriptor (LDT, TSS).
    System,
}

/// One random descriptor of the extra GDT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Kind.
    pub kind: DescKind,
    /// Base (segments).
    pub base: u32,
    /// 20-bit limit field.
    pub limit: u32,
    /// Access byte (P, DPL, S, type).
    pub access: u8,
    /// Flags nibble (G, D/B, L, AVL).
    pub flags: u8,
    /// Call gate: target selector and parameter count.
    pub gate_sel: u16,
    /// Call gate parameter count.
    pub params: u8,
}

impl Desc {
    /// Effective limit in bytes (G applied).
    pub fn byte_limit(&self) -> u32 {
        if self.flags & 8 != 0 { (self.limit << 12) | 0xFFF } else { self.limit }
    }

    /// Whether a data access through a segment register loaded with this (present, S = 1) descriptor
    /// faults with #GP(0)/#SS(0): outside the limit, a write to a code segment or a read-only data segment,
    /// a read of an execute-only code segment (SDM vol. 3A §5.3, §5.4, §3.4.5.1 table 3-1).
    pub fn access_faults(&self, off: u32, size: u32, write: bool) -> bool {
        let code = self.access & 8 != 0;
        let rw = self.access & 2 != 0;
        let type_fault = if write { code || !rw } else { code && !rw };
        !self.within_limit(off, size) || type_fault
    }

    /// Whether an access of `size` bytes at `off` is inside the segment (SDM vol. 3A §5.3: expand-down
    /// segments span limit+1 ..= 0xFFFF or 0xFFFFFFFF by the B flag).
    pub fn within_limit(&self, off: u32, size: u32) -> bool {
        let last = off as u64 + size as u64 - 1;
        let lim = self.byte_limit() as u64;
        if self.kind == DescKind::Data && self.access & 4 != 0 {
            let upper = if self.flags & 4 != 0 { 0xFFFF_FFFF } else { 0xFFFF };
            off as u64 > lim && last <= upper
        } else {
            last <= lim
        }
    }
}

/// The privileged action of a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Load `sreg` with `sel`, then read or write `size` bytes at `sreg:off`.
    SegAccess {
        /// Segment register name (ds es fs gs ss).
        sreg: &'static str,
        /// Selector loaded.
        sel: u16,
        /// Offset accessed.
        off: u32,
        /// Access size in bytes (1, 2, 4).
        size: u32,
        /// Write (else read).
        write: bool,
    },
    /// Far CALL (or JMP) to `sel:gate_target`.
    FarTransfer {
        /// Selector.
        sel: u16,
        /// CALL (else JMP).
        call: bool,
    },
    /// INT `vector` through an IDT gate rewritten to `attr` (type/DPL/P word) and `sel`.
    IntGate {
        /// Vector (0x40..0x4F).
        vector: u8,
        /// Gate attribute word (P DPL 0 type, then 0).
        attr: u16,
        /// Gate selector.
        sel: u16,
    },
    /// IA-32e mode: INT `vector` through a 16-byte IDT gate with attribute byte `attr` (P DPL 0 type),
    /// selector `sel` and IST index `ist`.
    LmIntGate {
        /// Vector (0x40..0x4F).
        vector: u8,
        /// Attribute byte.
        attr: u8,
        /// Gate selector.
        sel: u16,
        /// IST index (0-3).
        ist: u8,
    },
    /// IA-32e mode: 4 KiB test page at 0x210000 with PTE flags `pte` (incl. NX/reserved bits), CR0.WP =
    /// `wp`; read, write or execute (`kind` 0, 1, 2) at `addr`.
    LmPage {
        /// PTE flag bits (OR-ed with the frame address).
        pte: u64,
        /// Linear address accessed.
        addr: u64,
        /// 0 read, 1 write, 2 execute (CALL).
        kind: u8,
        /// CR0.WP.
        wp: bool,
    },
    /// Paging on; read or write `size` bytes at linear `addr`.
    PageAccess {
        /// Linear address.
        addr: u32,
        /// Write (else read).
        write: bool,
    },
}

/// A generated system test program.
#[derive(Clone, Debug)]
pub struct SysProgram {
    /// Run seed.
    pub seed: u64,
    /// Program index.
    pub index: u64,
    /// The extra descriptors.
    pub descs: Vec<Desc>,
    /// The action.
    pub action: Action,
    /// Privilege level the action runs at (0 or 3).
    pub cpl: u8,
    /// IA-32e (64-bit) program built on `longmode.inc` (else 32-bit protected mode on `sys.inc`).
    pub long_mode: bool,
    /// Paging: PTE flags of the 4 KiB test page at 0x110000, PDE of the 4 MiB page at 0x400000, CR0.WP.
    pub paging: Option<(u32, u32, bool)>,
    /// The nasm source of the ROM.
    pub source: String,
}

impl SysProgram {
    /// One-line description for reports.
    pub fn describe(&self) -> String {
        let mode = if self.long_mode { "long64" } else { "prot32" };
        let mut s =
            format!("seed {} program {}: {mode} cpl{} {:?}", self.seed, self.index, self.cpl, self.action);
        if let Some((pte, pde, wp)) = self.paging {
            let _ = write!(s, " paging pte={pte:#x} pde4m={pde:#x} wp={}", wp as u8);
        }
        s
    }

    /// The descriptor a selector names, if it is one of the extra ones.
    pub fn desc_of(&self, sel: u16) -> Option<Desc> {
        let i = (sel >> 3) as usize;
        if sel & 4 != 0 || i == 0 {
            return None;
        }
        if self.long_mode {
            // longmode.inc's own descriptors (0x08..0x48) are not modelled; the random ones start at 0x50.
            return i.checked_sub(10).and_then(|k| self.descs.get(k)).copied();
        }
        if i < 8 {
            return Some(STD_GDT[i - 1]);
        }
        self.descs.get(i - 8).copied()
    }
}

const fn seg(base: u32, limit: u32, access: u8, flags: u8) -> Desc {
    let kind = if access & 0x10 == 0 {
        DescKind::System
    } else if access & 8 != 0 {
        DescKind::Code
    } else {
        DescKind::Data
    };
    Desc { kind, base, limit, access, flags, gate_sel: 0, params: 0 }
}

/// The standard descriptors of `sys.inc` (selectors 0x08..0x38).
pub const STD_GDT: [Desc; 7] = [
    seg(0, 0xFFFFF, 0x9B, 0xC),
    seg(0, 0xFFFFF, 0x93, 0xC),
    seg(0, 0xFFFFF, 0xFB, 0xC),
    seg(0, 0xFFFFF, 0xF3, 0xC),
    seg(0xF0000, 0xFFFF, 0x9B, 0),
    seg(0, 0xFFFF, 0x93, 0),
    seg(0x3000, 0x2068, 0x89, 0),
];

fn random_desc(rng: &mut Rng) -> Desc {
    let kind = match rng.below(10) {
        0..=4 => DescKind::Data,
        5 | 6 => DescKind::Code,
        7 | 8 => DescKind::CallGate,
        _ => DescKind::System,
    };
    let p = if rng.chance(90) { 0x80 } else { 0 };
    let dpl = (rng.below(4) as u8) << 5;
    match kind {
        DescKind::Data => {
            let base = match rng.below(3) {
                0 => 0x10_0000,
                1 => 0x10_0000 + (rng.below(0x100) as u32) * 16,
                _ => 0,
            };
            let g = rng.chance(25);
            let limit = if g {
                *rng.pick(&[0u32, 1, 0xF, 0xFFFFF])
            } else {
                *rng.pick(&[0u32, 3, 0xFFF, 0x1FFF, 0xFFFF, 0x7FF0]) + rng.below(3) as u32
            };
            let ty = rng.below(8) as u8;
            let flags = (if g { 8 } else { 0 }) | if rng.chance(80) { 4 } else { 0 };
            Desc { kind, base, limit, access: p | dpl | 0x10 | ty, flags, gate_sel: 0, params: 0 }
        }
        DescKind::Code => {
            let ty = 8 + rng.below(8) as u8;
            Desc {
                kind,
                base: 0,
                limit: 0xFFFFF,
                access: p | dpl | 0x10 | ty,
                flags: 0xC,
                gate_sel: 0,
                params: 0,
            }
        }
        DescKind::CallGate => {
            let gate_sel = *rng.pick(&[0x08u16, 0x08, 0x18, 0x10, 0x40, 0x48, 0x50, 0x58, 0x60, 0x68]);
            let params = rng.below(3) as u8;
            Desc { kind, base: 0, limit: 0, access: p | dpl | 0x0C, flags: 0, gate_sel, params }
        }
        DescKind::System => {
            // A 32-bit TSS (available or busy) or LDT at TASK_TSS, which holds a valid task entering at
            // `task_target`. 16-bit TSS types (1, 3) are left out for now (see the report in the README).
            let ty = *rng.pick(&[2u8, 9, 0xB, 9, 0xB]);
            Desc { kind, base: 0x6000, limit: 0x67, access: p | dpl | ty, flags: 0, gate_sel: 0, params: 0 }
        }
    }
}

fn random_selector(rng: &mut Rng) -> u16 {
    let idx: u16 = match rng.below(10) {
        0..=6 => 8 + rng.below(EXTRA_DESCS as u64) as u16, // extra descriptors
        7 => rng.below(8) as u16,                          // standard ones (null, flat, TSS ...)
        8 => 8 + EXTRA_DESCS as u16 + rng.below(3) as u16, // beyond the GDT limit
        _ => rng.below(16) as u16,
    };
    let ti = if rng.chance(5) { 4 } else { 0 };
    idx << 3 | ti | rng.below(4) as u16
}

/// Generates program `index` of run `seed`.
pub fn generate(seed: u64, index: u64) -> SysProgram {
    let mut rng = Rng::for_case(seed ^ 0x5953_524F_4D00, index);
    let descs: Vec<Desc> = (0..EXTRA_DESCS).map(|_| random_desc(&mut rng)).collect();
    let cpl = if rng.chance(50) { 3 } else { 0 };
    let mut paging = None;
    let action = match rng.below(4) {
        0 => {
            let sreg = *rng.pick(&["ds", "es", "fs", "gs", "ss"]);
            let sel = random_selector(&mut rng);
            let size = *rng.pick(&[1u32, 2, 4]);
            let lim = {
                let i = (sel >> 3) as usize;
                if (8..8 + EXTRA_DESCS).contains(&i) { descs[i - 8].byte_limit() } else { 0xFFFF }
            };
            let off = match rng.below(6) {
                0 => 0,
                1 => lim.wrapping_sub(size - 1),
                2 => lim.wrapping_sub(size).wrapping_add(2),
                3 => lim.wrapping_add(1),
                4 => rng.below(0x2000) as u32,
                _ => 0xFFFF_FFF0 + rng.below(16) as u32,
            };
            // Keep flat-segment accesses inside RAM and away from the harness's variables.
            Action::SegAccess { sreg, sel, off, size, write: rng.chance(50) }
        }
        1 => Action::FarTransfer { sel: random_selector(&mut rng), call: rng.chance(70) },
        2 => {
            // 16-bit gates (6, 7) are left out: their 16-bit offset sends the 32-bit stub into RAM garbage.
            let ty = *rng.pick(&[0xEu16, 0xE, 0xF, 0xF, 0x5, 0xC, 0x0, 0x9]);
            let p = if rng.chance(85) { 0x8000 } else { 0 };
            let dpl = (rng.below(4) as u16) << 13;
            let sel = if rng.chance(85) { 0x08 } else { random_selector(&mut rng) };
            Action::IntGate { vector: 0x40 + rng.below(16) as u8, attr: p | dpl | ty << 8, sel }
        }
        _ => {
            let pte = (rng.below(8) as u32) | if rng.chance(30) { 0x60 } else { 0 };
            let mut pde = 0x40_0000 | 0x80 | (rng.below(8) as u32);
            if rng.chance(25) {
                // Bit 21 is reserved in a 4 MiB PDE (bits 20:13 are physical-address bits 39:32 with
                // PSE-36 and MAXPHYADDR 40, and would point at unbacked memory, whose contents are a
                // platform matter: QEMU reads 0, Ferrite all ones).
                pde |= 1 << 21;
            }
            paging = Some((pte, pde, rng.chance(50)));
            let addr = if rng.chance(60) { 0x11_0000 } else { 0x40_0000 } + (rng.below(0x400) as u32) * 4;
            Action::PageAccess { addr, write: rng.chance(50) }
        }
    };
    let regs: Vec<u32> = (0..5).map(|_| rng.next_u64() as u32).collect();
    let mut p =
        SysProgram { seed, index, descs, action, cpl, long_mode: false, paging, source: String::new() };
    // A third of the programs run in IA-32e mode instead (drawn last: the protected-mode programs of a seed
    // keep their contents).
    if rng.chance(33) {
        p.long_mode = true;
        p.paging = None;
        p.action = match rng.below(3) {
            0 => {
                let ty = *rng.pick(&[0xEu8, 0xE, 0xF, 0xC, 0x5, 0x6, 0x0]);
                let attr = if rng.chance(85) { 0x80 } else { 0 } | (rng.below(4) as u8) << 5 | ty;
                let sel = *rng.pick(&[0x08u16, 0x08, 0x08, 0x28, 0x38, 0x10, 0x00, 0x58, 0x60, 0x7F8]);
                let ist = if rng.chance(30) { 1 + rng.below(3) as u8 } else { 0 };
                Action::LmIntGate { vector: 0x40 + rng.below(16) as u8, attr, sel, ist }
            }
            1 => {
                let mut pte = rng.below(8) | if rng.chance(30) { 0x60 } else { 0 };
                match rng.below(6) {
                    0 => pte |= 1 << 63,                   // XD without EFER.NXE: reserved
                    1 => pte |= 1 << (40 + rng.below(12)), // above MAXPHYADDR (40 on both)
                    _ => {}
                }
                let addr = 0x21_0000 + rng.below(0x200) * 8;
                Action::LmPage { pte, addr, kind: rng.below(3) as u8, wp: rng.chance(50) }
            }
            _ => {
                let sreg = *rng.pick(&["ds", "es", "fs", "gs", "ss"]);
                let sel = random_selector(&mut rng);
                Action::SegAccess { sreg, sel, off: rng.below(0x1000) as u32, size: 4, write: rng.chance(50) }
            }
        };
        p.source = source_long(&p, &regs);
    } else {
        p.source = source(&p, &regs);
    }
    p
}

/// The 8-byte form of a descriptor (call gates become 8-byte legacy gates, which are invalid in IA-32e mode).
fn desc_qword(d: &Desc) -> u64 {
    match d.kind {
        DescKind::CallGate => {
            let off = 0xF0000u64; // never reached: a legacy call gate is not a valid 64-bit gate
            (off & 0xFFFF)
                | u64::from(d.gate_sel) << 16
                | u64::from(d.params) << 32
                | u64::from(d.access) << 40
        }
        _ => {
            let (b, l) = (u64::from(d.base), u64::from(d.limit));
            (l & 0xFFFF)
                | (b & 0xFF_FFFF) << 16
                | u64::from(d.access) << 40
                | (l >> 16 & 0xF) << 48
                | u64::from(d.flags) << 52
                | (b >> 24) << 56
        }
    }
}

/// The nasm source of an IA-32e program (`longmode.inc`; same dump line, with 64-bit values).
fn source_long(p: &SysProgram, regs: &[u32]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "; generated by difftest::sysrom: {}", p.describe());
    s.push_str(
        "%include \"common.inc\"\n%include \"longmode.inc\"\n\nDUMPSAVE equ LM_USER\nPT2 equ 0x20000\n\n",
    );
    s.push_str("rom_start:\n        INIT16\n        LM_ENTER main64\n\n        bits 64\nmain64:\n");
    for (i, d) in p.descs.iter().enumerate() {
        let _ = writeln!(
            s,
            "        mov rax, {:#x}\n        mov [LM_GDT + 0x50 + {}], rax",
            desc_qword(d),
            8 * i
        );
    }
    s.push_str(
        "        mov rdi, 0x100000\n        mov eax, 0x9E3779B9\n        mov ecx, 0x8000\n\
         .fill:  mov [rdi], eax\n        add rdi, 4\n        rol eax, 5\n        add eax, edi\n        dec ecx\n        jnz .fill\n",
    );
    match &p.action {
        Action::LmPage { pte, wp, .. } => {
            let _ = write!(
                s,
                "        mov rdi, PT2\n        mov rax, 0x200007\n        mov ecx, 512\n\
                 .pt:    mov [rdi], rax\n        add rdi, 8\n        add rax, 0x1000\n        dec ecx\n        jnz .pt\n\
                 \x20       mov rax, 0x210000 | {pte:#x}\n        mov [PT2 + 0x10 * 8], rax\n\
                 \x20       mov byte [0x210000 + 0x800], 0xC3\n\
                 \x20       mov qword [LM_PD + 8], PT2 | 7\n        mov rax, cr3\n        mov cr3, rax\n\
                 \x20       mov rax, cr0\n"
            );
            s.push_str(if *wp { "        or eax, 0x10000\n" } else { "        and eax, ~0x10000\n" });
            s.push_str("        mov cr0, rax\n");
        }
        Action::LmIntGate { vector, attr, sel, ist } => {
            let v = *vector as u32;
            let _ = write!(
                s,
                "        mov rax, lm_stub_{v}\n        mov rcx, LM_IDT + {v} * 16\n        mov [rcx], ax\n\
                 \x20       mov word [rcx + 2], {sel:#x}\n        mov byte [rcx + 4], {ist}\n        mov byte [rcx + 5], {attr:#x}\n\
                 \x20       shr rax, 16\n        mov [rcx + 6], ax\n        shr rax, 16\n        mov [rcx + 8], eax\n\
                 \x20       mov dword [rcx + 12], 0\n"
            );
        }
        _ => {}
    }
    s.push_str("        TRY\n");
    for (n, v) in ["rbx", "rcx", "rsi", "rdi", "rbp"].iter().zip(regs) {
        let _ = writeln!(s, "        mov {n}, {v:#x}");
    }
    if p.cpl == 3 {
        s.push_str("        RING3_BEGIN\n");
    }
    match &p.action {
        Action::LmIntGate { vector, .. } => {
            let _ = writeln!(s, "        int {vector:#x}");
        }
        Action::LmPage { addr, kind, .. } => {
            let _ = writeln!(
                s,
                "{}",
                match kind {
                    0 => format!("        mov rbp, [{addr:#x}]"),
                    1 => format!("        mov [{addr:#x}], rbx"),
                    _ => "        mov rax, 0x210800\n        call rax".to_string(),
                }
            );
        }
        Action::SegAccess { sreg, sel, off, write, .. } => {
            let _ = writeln!(s, "        mov ax, {sel:#x}\n        mov {sreg}, ax");
            if *write {
                let _ = writeln!(s, "        mov dword [{sreg}:0x100000 + {off:#x}], ebx");
            } else {
                let _ = writeln!(s, "        mov ebp, dword [{sreg}:0x100000 + {off:#x}]");
            }
        }
        _ => {}
    }
    if p.cpl == 3 {
        s.push_str("        RING3_END\n");
    }
    s.push_str("        ENDTRY\n");
    s.push_str(
        "        mov ax, LM_SEL_KDATA\n        mov ss, ax\n        mov ds, ax\n        mov es, ax\n        mov rsp, LM_STACK\n\
         \x20       mov [DUMPSAVE], rbx\n        mov [DUMPSAVE + 8], rcx\n        mov [DUMPSAVE + 16], rsi\n\
         \x20       mov [DUMPSAVE + 24], rdi\n        mov [DUMPSAVE + 32], rbp\n\
         \x20       mov ax, fs\n        movzx eax, ax\n        mov [DUMPSAVE + 40], rax\n\
         \x20       mov ax, gs\n        movzx eax, ax\n        mov [DUMPSAVE + 48], rax\n\
         \x20       mov rax, cr2\n        mov [DUMPSAVE + 56], rax\n\
         \x20       mov rsi, LM_GDT\n        mov ecx, 0x80 / 4\n        call cksum64\n        mov [DUMPSAVE + 64], rax\n\
         \x20       mov rsi, 0x100000\n        mov ecx, 0x8000\n        call cksum64\n        mov [DUMPSAVE + 72], rax\n\
         \x20       mov rsi, 0x20000\n        mov ecx, 0x400\n        call cksum64\n        mov [DUMPSAVE + 80], rax\n\
         \x20       mov rsi, 0x210000\n        mov ecx, 0x400\n        call cksum64\n        mov [DUMPSAVE + 88], rax\n\
         \x20       mov rsi, msg_dump\n        call puts64\n",
    );
    let fields: [(&str, &str); 20] = [
        ("vec", "[LM_EXC_VEC]"),
        ("err", "[LM_EXC_ERR]"),
        ("eip", "[LM_EXC_RIP]"),
        ("cs", "[LM_EXC_CS]"),
        ("efl", "[LM_EXC_RFL]"),
        ("esp", "[LM_EXC_RSP]"),
        ("ss", "[LM_EXC_SS]"),
        ("hrsp", "[LM_EXC_HRSP]"),
        ("cr2", "[DUMPSAVE + 56]"),
        ("ebx", "[DUMPSAVE]"),
        ("ecx", "[DUMPSAVE + 8]"),
        ("esi", "[DUMPSAVE + 16]"),
        ("edi", "[DUMPSAVE + 24]"),
        ("ebp", "[DUMPSAVE + 32]"),
        ("fs", "[DUMPSAVE + 40]"),
        ("gs", "[DUMPSAVE + 48]"),
        ("gdt", "[DUMPSAVE + 64]"),
        ("mem", "[DUMPSAVE + 72]"),
        ("pg", "[DUMPSAVE + 80]"),
        ("tpage", "[DUMPSAVE + 88]"),
    ];
    for (i, (name, src)) in fields.iter().enumerate() {
        let _ = writeln!(
            s,
            "        mov rsi, f{i}\n        call puts64\n        mov rax, {src}\n        call hex64\n        jmp f{i}_end\nf{i}: db \" {name}=\", 0\nf{i}_end:"
        );
    }
    for i in 1..(10 + EXTRA_DESCS) {
        let _ = writeln!(
            s,
            "        mov rsi, g{i}\n        call puts64\n        mov eax, [LM_GDT + {}]\n        call hex64\n        jmp g{i}_end\ng{i}: db \" d{:02x}=\", 0\ng{i}_end:",
            i * 8 + 4,
            i * 8
        );
    }
    s.push_str("        mov al, 10\n        out DBG_PORT, al\n        jmp finish64\n");
    s.push_str(
        "cksum64: xor eax, eax\n.l:     rol eax, 3\n        add eax, [rsi]\n        add rsi, 4\n        dec ecx\n        jnz .l\n        ret\n",
    );
    s.push_str("msg_dump: db \"DUMP\", 0\n\n%include \"reset.inc\"\n");
    s
}

fn desc_line(d: &Desc) -> String {
    match d.kind {
        DescKind::CallGate => {
            format!("        GATEL {:#x}, gate_target, {:#x}, {}", d.gate_sel, d.access, d.params)
        }
        _ => format!("        DESC {:#x}, {:#x}, {:#x}, {:#x}", d.base, d.limit, d.access, d.flags),
    }
}

/// The nasm source of a program (see the module documentation for its structure).
fn source(p: &SysProgram, regs: &[u32]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "; generated by difftest::sysrom: {}", p.describe());
    s.push_str("%include \"common.inc\"\n%include \"sys.inc\"\n\n");
    s.push_str("PD equ 0x108000\nPT0 equ 0x109000\nDUMPSAVE equ 0x5A0\n\n");
    s.push_str(
        "rom_start:\n        INIT16\n        RESET_GUARD\n        PM32_ENTER xgdt, xgdt_end, main32\n",
    );
    s.push_str("xgdt:\n");
    for d in &p.descs {
        s.push_str(&desc_line(d));
        s.push('\n');
    }
    s.push_str("xgdt_end:\n\n        bits 32\nmain32:\n");
    // Data area fill pattern.
    s.push_str(
        "        mov edi, 0x100000\n        mov eax, 0x9E3779B9\n        mov ecx, 0x8000\n\
         .fill:  mov [edi], eax\n        add edi, 4\n        rol eax, 5\n        add eax, edi\n        loop .fill\n",
    );
    if let Some((pte, pde, wp)) = p.paging {
        let _ = write!(
            s,
            "        mov edi, PT0\n        mov eax, 7\n        mov ecx, 1024\n\
             .pt:    mov [edi], eax\n        add edi, 4\n        add eax, 0x1000\n        loop .pt\n\
             \x20       mov dword [PT0 + 0x110 * 4], 0x110000 | {pte:#x}\n\
             \x20       mov edi, PD\n        xor eax, eax\n        mov ecx, 1024\n        rep stosd\n\
             \x20       mov dword [PD], PT0 | 7\n        mov dword [PD + 4], {pde:#x}\n\
             \x20       mov eax, cr4\n        or eax, 0x10\n        mov cr4, eax\n\
             \x20       mov eax, PD\n        mov cr3, eax\n        mov eax, cr0\n        or eax, 0x80000000\n"
        );
        if wp {
            s.push_str("        or eax, 0x10000\n");
        } else {
            s.push_str("        and eax, ~0x10000\n");
        }
        s.push_str("        mov cr0, eax\n");
    }
    if let Action::IntGate { vector, attr, sel } = &p.action {
        let _ = writeln!(s, "        SET_GATE {vector:#x}, pm_stubs + {vector:#x} * 16, {sel:#x}, {attr:#x}");
    }
    // The task behind the random TSS descriptors (32-bit TSS at 0x6000, SDM vol. 3A figure 7-2).
    s.push_str(
        "        mov edi, 0x6000\n        xor eax, eax\n        mov ecx, 0x68 / 4\n        rep stosd\n\
         \x20       mov eax, cr3\n        mov [0x601C], eax\n\
         \x20       mov dword [0x6020], task_target\n        mov dword [0x6024], 0x2\n\
         \x20       mov dword [0x6038], 0x78000\n        mov dword [0x604C], SEL_CODE0\n\
         \x20       mov dword [0x6050], SEL_DATA0\n        mov dword [0x6048], SEL_DATA0\n\
         \x20       mov dword [0x6054], SEL_DATA0\n        mov dword [0x6058], SEL_DATA0\n\
         \x20       mov dword [0x605C], SEL_DATA0\n        mov word [0x6066], 0x68\n",
    );
    s.push_str("        TRY done\n");
    let names = ["ebx", "ecx", "esi", "edi", "ebp"];
    for (n, v) in names.iter().zip(regs) {
        let _ = writeln!(s, "        mov {n}, {v:#x}");
    }
    if p.cpl == 3 {
        // IRET to ring 3 nulls DS/ES (they hold DPL0 selectors, SDM vol. 3A §5.8.6): load ring-3 data.
        s.push_str("        RING3 r3code, 0x2\nr3code:\n        mov ax, SEL_DATA3 | 3\n        mov ds, ax\n        mov es, ax\n");
    }
    match &p.action {
        Action::SegAccess { sreg, sel, off, size, write } => {
            let _ = writeln!(s, "        mov ax, {sel:#x}\n        mov {sreg}, ax");
            let (reg, kw) = match size {
                1 => ("dl", "byte"),
                2 => ("dx", "word"),
                _ => ("edx", "dword"),
            };
            if *write {
                let _ = writeln!(s, "        mov edx, ebx\n        mov {kw} [{sreg}:{off:#x}], {reg}");
            } else {
                let _ = writeln!(s, "        mov {reg}, {kw} [{sreg}:{off:#x}]\n        mov ebp, edx");
            }
        }
        Action::FarTransfer { sel, call } => {
            let op = if *call { "call" } else { "jmp" };
            let _ = writeln!(s, "        {op} {sel:#x}:gate_target");
        }
        Action::IntGate { vector, .. } => {
            let _ = writeln!(s, "        int {vector:#x}");
        }
        Action::LmIntGate { .. } | Action::LmPage { .. } => {}
        Action::PageAccess { addr, write } => {
            if *write {
                let _ = writeln!(s, "        mov dword [{addr:#x}], ebx");
            } else {
                let _ = writeln!(s, "        mov ebp, [{addr:#x}]");
            }
        }
    }
    if p.cpl == 3 {
        s.push_str("        int VEC_EXIT\n");
    }
    s.push_str("        jmp done\n");
    // Target of far transfers and call gates: record the arrival like an exception (vector 0x31).
    s.push_str("gate_target:\n        push dword 0\n        push dword 0x31\n        jmp pm_exc_common\n");
    // Entry of the task at 0x6000: recorded as vector 0x32.
    s.push_str("task_target:\n        push dword 0\n        push dword 0x32\n        jmp pm_exc_common\n");
    s.push_str(
        "done:\n        ENDTRY\n\
         \x20       mov [DUMPSAVE], ebx\n        mov [DUMPSAVE + 4], ecx\n        mov [DUMPSAVE + 8], esi\n\
         \x20       mov [DUMPSAVE + 12], edi\n        mov [DUMPSAVE + 16], ebp\n\
         \x20       mov ax, fs\n        movzx eax, ax\n        mov [DUMPSAVE + 20], eax\n\
         \x20       mov ax, gs\n        movzx eax, ax\n        mov [DUMPSAVE + 24], eax\n\
         \x20       mov eax, cr2\n        mov [DUMPSAVE + 28], eax\n\
         \x20       mov ax, SEL_DATA0\n        mov ss, ax\n        mov esp, EMERG_STACK\n\
         \x20       mov eax, cr0\n        and eax, 0x7FFFFFFF\n        mov cr0, eax\n\
         \x20       mov esi, GDT_ADDR\n        mov ecx, 0x70 / 4\n        call cksum\n        mov [DUMPSAVE + 32], eax\n\
         \x20       mov esi, 0x100000\n        mov ecx, 0x8000\n        call cksum\n        mov [DUMPSAVE + 36], eax\n\
         \x20       mov esi, 0x400000\n        mov ecx, 0x400\n        call cksum\n        mov [DUMPSAVE + 40], eax\n\
         \x20       mov esi, TSS_ADDR\n        mov ecx, 0x68 / 4\n        call cksum\n        mov [DUMPSAVE + 44], eax\n\
         \x20       mov esi, 0x6000\n        mov ecx, 0x68 / 4\n        call cksum\n        mov [DUMPSAVE + 48], eax\n\
         \x20       mov esi, msg_dump\n        call puts32\n",
    );
    let fields: [(&str, &str); 20] = [
        ("vec", "[EXC_VEC]"),
        ("err", "[EXC_ERR]"),
        ("eip", "[EXC_EIP]"),
        ("cs", "[EXC_CS]"),
        ("efl", "[EXC_EFL]"),
        ("esp", "[EXC_ESP]"),
        ("ss", "[EXC_SS]"),
        ("cr2", "[DUMPSAVE + 28]"),
        ("ebx", "[DUMPSAVE]"),
        ("ecx", "[DUMPSAVE + 4]"),
        ("esi", "[DUMPSAVE + 8]"),
        ("edi", "[DUMPSAVE + 12]"),
        ("ebp", "[DUMPSAVE + 16]"),
        ("fs", "[DUMPSAVE + 20]"),
        ("gs", "[DUMPSAVE + 24]"),
        ("gdt", "[DUMPSAVE + 32]"),
        ("mem", "[DUMPSAVE + 36]"),
        ("pg", "[DUMPSAVE + 40]"),
        ("tss", "[DUMPSAVE + 44]"),
        ("tss2", "[DUMPSAVE + 48]"),
    ];
    for (i, (name, src)) in fields.iter().enumerate() {
        let _ = writeln!(
            s,
            "        mov esi, f{i}\n        call puts32\n        mov eax, {src}\n        call hex32\n        jmp f{i}_end\nf{i}: db \" {name}=\", 0\nf{i}_end:"
        );
    }
    // The second dword (access byte, flags, base 31:24) of every GDT entry: accessed/busy bits.
    for i in 1..(8 + EXTRA_DESCS) {
        let _ = writeln!(
            s,
            "        mov esi, g{i}\n        call puts32\n        mov eax, [GDT_ADDR + {}]\n        call hex32\n        jmp g{i}_end\ng{i}: db \" d{:02x}=\", 0\ng{i}_end:",
            i * 8 + 4,
            i * 8
        );
    }
    s.push_str("        mov al, 10\n        out DBG_PORT, al\n        jmp finish32\n");
    s.push_str(
        "cksum:  xor eax, eax\n.l:     rol eax, 3\n        add eax, [esi]\n        add esi, 4\n        loop .l\n        ret\n",
    );
    s.push_str("msg_dump: db \"DUMP\", 0\n\n%include \"reset.inc\"\n");
    s
}

/// Default include directory: the test-roms sources next to this crate.
pub fn default_include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-roms/src/roms")
}

/// Assembles a program into a 64 KiB ROM image with nasm (`include_dir` holds `common.inc` etc.).
pub fn assemble(p: &SysProgram, include_dir: &Path, work_dir: &Path) -> Result<Vec<u8>, String> {
    std::fs::create_dir_all(work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let asm = work_dir.join(format!("sys_{}_{}.asm", p.seed, p.index));
    let bin = asm.with_extension("bin");
    std::fs::write(&asm, &p.source).map_err(|e| format!("{}: {e}", asm.display()))?;
    let mut inc = include_dir.as_os_str().to_owned();
    inc.push("/");
    let out = Command::new("nasm")
        .arg("-f")
        .arg("bin")
        .arg("-I")
        .arg(&inc)
        .arg("-o")
        .arg(&bin)
        .arg(&asm)
        .output()
        .map_err(|e| format!("cannot run nasm: {e}"))?;
    if !out.status.success() {
        return Err(format!("nasm failed on {}: {}", asm.display(), String::from_utf8_lossy(&out.stderr)));
    }
    let img = std::fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    if img.len() != 0x10000 {
        return Err(format!("ROM is {} bytes, expected 65536", img.len()));
    }
    Ok(img)
}

/// Whether `qemu-system-x86_64` and `nasm` can be run.
pub fn tools_available() -> Result<(), String> {
    for (tool, arg) in [("qemu-system-x86_64", "--version"), ("nasm", "-v")] {
        match Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(s) if s.success() => {}
            _ => return Err(format!("{tool} is not available")),
        }
    }
    Ok(())
}

/// Runs a ROM image under QEMU TCG; returns the debug-console output.
pub fn run_qemu(rom_path: &Path, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "pc", "-accel", "tcg", "-m", "32", "-no-reboot", "-bios"])
        .arg(rom_path)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-debugcon", "stdio", "-display", "none"])
        .args(["-nodefaults", "-serial", "none", "-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = reader.join().map_err(|_| "reader thread panicked")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Parses the `DUMP` line of a run's output into field → value.
pub fn parse_dump(output: &str) -> Option<BTreeMap<String, u64>> {
    let line = output.lines().find(|l| l.starts_with("DUMP"))?;
    let mut m = BTreeMap::new();
    for kv in line.split_whitespace().skip(1) {
        let (k, v) = kv.split_once('=')?;
        m.insert(k.to_string(), u64::from_str_radix(v, 16).ok()?);
    }
    Some(m)
}

/// A known QEMU TCG deviation from the Intel SDM, with the section it departs from.
#[derive(Clone, Copy, Debug)]
pub struct Quirk {
    /// Short name.
    pub name: &'static str,
    /// What the SDM says and what QEMU does.
    pub why: &'static str,
}

/// The filtering rules (see [`compare_dumps`]).
pub const QUIRKS: [Quirk; 14] = [
    Quirk {
        name: "qemu-no-data-limit-check",
        why: "SDM vol. 3A §5.3 (Limit Checking): an access outside a data segment's limit (or inside an \
              expand-down segment's excluded range) is #GP(0), #SS(0) for SS; QEMU TCG does not check segment \
              limits on data accesses, so it completes the access",
    },
    Quirk {
        name: "qemu-no-data-access-rights-check",
        why: "SDM vol. 3A §3.4.5.1 (table 3-1) and §6.15 (Interrupt 13): a write through a segment register \
              holding a code segment or a read-only data segment is #GP(0); QEMU TCG checks segment types only \
              when the register is loaded, so the write completes",
    },
    Quirk {
        name: "qemu-null-selector-access",
        why: "SDM vol. 3A §3.4.2 and §5.4.1: DS/ES/FS/GS may be loaded with a null selector, but a memory \
              access through it is #GP(0); QEMU TCG performs the access with base 0",
    },
    Quirk {
        name: "qemu-int-gate-eip-beyond-limit",
        why: "SDM vol. 2A INT n pseudocode (INTRA-PRIVILEGE-LEVEL-INTERRUPT): IF the instruction pointer from \
              the gate is not within the code-segment limit THEN #GP(EXT), i.e. #GP(0) for INT n; QEMU 7.2 TCG \
              does not raise it for a 32-bit gate into the 16-bit code segment (limit 0xFFFF) and continues \
              at the offset truncated to 16 bits",
    },
    Quirk {
        name: "qemu-accessed-bit-only-on-mov-sreg",
        why: "SDM vol. 3A §3.4.5.1: the processor sets a segment descriptor's accessed bit whenever it loads \
              the selector into a segment register (CS and SS by far JMP/CALL, IRET, RET and gates included); \
              QEMU 7.2 TCG sets it only for MOV/POP to a segment register. Applied to accessed-bit-only \
              differences where Ferrite has the bit set and QEMU not",
    },
    Quirk {
        name: "qemu-far-transfer-eip-limit-error-code",
        why: "SDM vol. 2A CALL/JMP pseudocode (far transfer to a code segment): IF the instruction pointer is \
              not within the code-segment limit THEN #GP(0); QEMU 7.2 TCG pushes the code-segment selector as \
              the error code instead of 0",
    },
    Quirk {
        name: "qemu-conforming-call-gate-rpl",
        why: "SDM vol. 2A CALL pseudocode (call gate to a conforming code segment, same privilege): CS(RPL) <- \
              CPL; QEMU 7.2 TCG loads CS with RPL = the code segment's DPL",
    },
    Quirk {
        name: "qemu-no-rf-in-fault-frame",
        why: "SDM vol. 3A §17.3.1.1: the processor sets RF in the EFLAGS image it saves for every fault-class \
              exception other than an instruction-breakpoint #DB (so that IRET does not re-trigger a \
              breakpoint); QEMU 7.2 TCG saves RF clear",
    },
    Quirk {
        name: "qemu-64bit-segment-override-base",
        why: "SDM vol. 3A §3.2.4 and vol. 1 §3.3.7.1: in 64-bit mode the processor treats the bases of CS, DS, \
              ES and SS as zero (only FS and GS bases are used); QEMU 7.2 TCG adds the cached base of an \
              explicit DS:/ES:/SS: override",
    },
    Quirk {
        name: "qemu-ist-same-privilege-nulls-ss",
        why: "SDM vol. 3A §6.14.4/§6.14.5 and the INT n pseudocode: SS is forced to a null selector (RPL = new \
              CPL) only on a privilege-level change; an IST stack switch without one leaves SS unchanged. QEMU \
              7.2 TCG loads the null SS whenever the gate has an IST index",
    },
    Quirk {
        name: "qemu-task-gate-ldt-selector",
        why: "SDM vol. 2A INT n pseudocode (TASK-GATE): IF the TSS selector has TI = 1 (local) or its index is \
              outside the GDT limit THEN #GP(TSS selector); QEMU 7.2 TCG raises #TS(TSS selector) for TI = 1",
    },
    Quirk {
        name: "qemu-no-ext-bit",
        why: "SDM vol. 3A §6.13 (Error Code), bit 0 EXT: set when the exception occurred while delivering an \
              external event or another exception (e.g. a #GP/#NP on the IDT gate's target selector); QEMU \
              never sets it",
    },
    Quirk {
        name: "qemu-rsvd-without-p",
        why: "SDM vol. 3A §4.7 (Page-Fault Exceptions): RSVD (bit 3) can be set only if P (bit 0) is set, a \
              reserved-bit violation being a protection violation on a present entry; QEMU 7.2 TCG reports \
              RSVD with P clear",
    },
    Quirk {
        name: "qemu-ia32e-idt-gp-code",
        why: "SDM vol. 3A §6.13 (Error Code) and §6.14.1: an error code that refers to an IDT gate holds the \
              vector in the index field (bits 15:3) with IDT = 1, i.e. vector*8+2 (+EXT), in IA-32e mode too; \
              QEMU 7.2 TCG pushes vector*16+2 (the byte offset of the 16-byte gate)",
    },
];

/// Result of comparing the two runs of one program.
#[derive(Clone, Debug, Default)]
pub struct SysComparison {
    /// Fields that differ and are not explained by a quirk: (field, qemu, ferrite).
    pub diffs: Vec<(String, Option<u64>, Option<u64>)>,
    /// Differences explained by a quirk: (quirk name, field).
    pub filtered: Vec<(&'static str, String)>,
}

impl SysComparison {
    /// No unexplained difference.
    pub fn is_clean(&self) -> bool {
        self.diffs.is_empty()
    }
}

fn exc_vectors_with_code(v: u64) -> bool {
    matches!(v, 8 | 10..=14 | 17)
}

/// Compares QEMU's dump with Ferrite's, filtering the [`QUIRKS`] that apply to this program.
///
/// * `qemu-no-data-limit-check`: the action is a segment access that the generator knows is outside the
///   limit of a present data segment, Ferrite reports #GP(0)/#SS(0) and QEMU no exception; the fields the
///   access and the fault change (vector, error code, EIP/CS/EFLAGS/ESP/SS of the frame, EBP/memory checksum)
///   are then ignored.
/// * `qemu-no-ext-bit`: same vector, error codes equal but for bit 0, which Ferrite sets.
/// * `qemu-rsvd-without-p`: #PF on both, error codes equal but for bit 0, bit 3 set, Ferrite has P.
pub fn compare_dumps(
    p: &SysProgram,
    qemu: &BTreeMap<String, u64>,
    ferrite: &BTreeMap<String, u64>,
) -> SysComparison {
    let mut c = SysComparison::default();
    let mut ignore: Vec<&str> = Vec::new();
    let qv = qemu.get("vec").copied();
    let fv = ferrite.get("vec").copied();
    let qe = qemu.get("err").copied().unwrap_or(0);
    let fe = ferrite.get("err").copied().unwrap_or(0);
    if let Action::SegAccess { sel, off, size, sreg, write } = &p.action
        && matches!(fv, Some(12 | 13))
        && fe == 0
        && matches!(qv, Some(0x30 | 0xFFFF_FFFF))
    {
        let expect = if *sreg == "ss" { 12 } else { 13 };
        let rule = match p.desc_of(*sel) {
            Some(ref d) if matches!(d.kind, DescKind::Data | DescKind::Code) && d.access & 0x80 != 0 => {
                if !d.within_limit(*off, *size) {
                    Some("qemu-no-data-limit-check")
                } else if d.access_faults(*off, *size, *write) {
                    Some("qemu-no-data-access-rights-check")
                } else {
                    None
                }
            }
            None if *sel & !3 == 0 && *sreg != "ss" => Some("qemu-null-selector-access"),
            _ => None,
        };
        if let Some(rule) = rule
            && fv == Some(expect)
        {
            c.filtered.push((rule, "vec".into()));
            // The completed access may land anywhere (here: in the GDT, the TSSes or the data area).
            ignore.extend(["vec", "err", "eip", "cs", "efl", "esp", "ss", "ebp", "mem", "fs", "gs"]);
            ignore.extend(["gdt", "pg", "tss", "tss2"]);
        }
    }
    if let Action::IntGate { attr, sel, .. } = &p.action
        && sel & !3 == 0x28
        && attr & 0x8000 != 0
        && matches!((attr >> 8) & 0x1F, 0xE | 0xF)
        && (p.cpl == 0 || (attr >> 13) & 3 == 3)
        && fv == Some(13)
        && fe == 0
        && qv != Some(13)
    {
        // Everything after the missing #GP differs (QEMU runs ROM bytes as 16-bit code).
        c.filtered.push(("qemu-int-gate-eip-beyond-limit", "vec".into()));
        ignore.extend(["vec", "err", "eip", "cs", "efl", "esp", "ss", "ebx", "ecx", "esi", "edi", "ebp"]);
        ignore.extend(["mem", "fs", "gs", "cr2", "gdt", "pg"]);
    }
    if let Action::FarTransfer { sel, .. } = &p.action
        && let Some(g) = p.desc_of(*sel)
        && g.kind == DescKind::CallGate
        && let Some(t) = p.desc_of(g.gate_sel)
        && t.kind == DescKind::Code
        && t.access & 4 != 0
        && let (Some(qc), Some(fc)) = (qemu.get("cs"), ferrite.get("cs"))
        && qc & !3 == fc & !3
        && fc & 3 == u64::from(p.cpl)
        && qc & 3 == u64::from((t.access >> 5) & 3)
    {
        c.filtered.push(("qemu-conforming-call-gate-rpl", "cs".into()));
        ignore.push("cs");
    }
    if let Action::FarTransfer { sel, .. } = &p.action
        && let Some(d) = p.desc_of(*sel)
        && d.kind == DescKind::Code
        && d.byte_limit() < 0xF_0000
        && qv == Some(13)
        && fv == Some(13)
        && qe == u64::from(*sel & 0xFFFC)
        && fe == 0
    {
        c.filtered.push(("qemu-far-transfer-eip-limit-error-code", "err".into()));
        ignore.push("err");
    }
    if let (Some(a), Some(b)) = (qemu.get("efl"), ferrite.get("efl"))
        && a ^ b == 1 << 16
        && b & 1 << 16 != 0
        && qv == fv
        && fv.is_some_and(|v| v < 32 && !matches!(v, 1 | 3 | 4))
    {
        c.filtered.push(("qemu-no-rf-in-fault-frame", "efl".into()));
        ignore.push("efl");
    }
    if p.long_mode
        && let Action::SegAccess { sreg, sel, .. } = &p.action
        && matches!(*sreg, "ds" | "es" | "ss")
        && p.desc_of(*sel).is_some_and(|d| d.base != 0 && d.kind == DescKind::Data && d.access & 0x80 != 0)
        && qv == fv
    {
        let touched = ["ebp", "mem", "gdt", "pg", "tss", "tss2", "tpage"];
        let differs = |k: &str| qemu.get(k) != ferrite.get(k);
        if touched.iter().any(|k| differs(k)) {
            c.filtered.push(("qemu-64bit-segment-override-base", "ebp".into()));
            ignore.extend(touched);
        }
    }
    if let Action::IntGate { attr, sel, .. } = &p.action
        && (attr >> 8) & 0x1F == 5
        && sel & 4 != 0
        && qv == Some(10)
        && fv == Some(13)
        && qe == fe
    {
        c.filtered.push(("qemu-task-gate-ldt-selector", "vec".into()));
        ignore.push("vec");
    }
    if let Action::LmIntGate { ist, .. } = &p.action
        && *ist != 0
        && let (Some(&qs), Some(&fs)) = (qemu.get("ss"), ferrite.get("ss"))
        && qs != fs
        && qs & !3 == 0
        && fs & !3 != 0
    {
        c.filtered.push(("qemu-ist-same-privilege-nulls-ss", "ss".into()));
        ignore.push("ss");
    }
    if let Action::LmIntGate { vector, .. } = &p.action
        && qv == fv
        && matches!(fv, Some(11 | 13))
        && qe & !1 == u64::from(*vector) * 16 + 2
        && fe & !1 == u64::from(*vector) * 8 + 2
        && qe & 1 == fe & 1
    {
        c.filtered.push(("qemu-ia32e-idt-gp-code", "err".into()));
        ignore.push("err");
    }
    if qv == fv && qe != fe && qe ^ fe == 1 && fe & 1 == 1 && fv.is_some_and(exc_vectors_with_code) {
        if fv == Some(14) && fe & 8 != 0 {
            c.filtered.push(("qemu-rsvd-without-p", "err".into()));
        } else if fv != Some(14) {
            c.filtered.push(("qemu-no-ext-bit", "err".into()));
        }
        if c.filtered.iter().any(|(_, f)| f == "err") {
            ignore.push("err");
        }
    }
    {
        let mut all = true;
        let mut any = false;
        for (k, &fv) in ferrite.iter().filter(|(k, _)| k.starts_with('d') && k.len() == 3) {
            let qv = qemu.get(k).copied().unwrap_or(0);
            if qv == fv {
                continue;
            }
            let segment = fv & 0x1000 != 0; // S = 1: code or data
            if qv ^ fv == 0x100 && fv & 0x100 != 0 && segment {
                any = true;
                ignore.push(k.as_str());
            } else {
                all = false;
            }
        }
        if any && all {
            c.filtered.push(("qemu-accessed-bit-only-on-mov-sreg", "gdt".into()));
            ignore.push("gdt");
        }
    }
    let keys: std::collections::BTreeSet<&String> = qemu.keys().chain(ferrite.keys()).collect();
    for k in keys {
        if ignore.contains(&k.as_str()) {
            continue;
        }
        let (a, b) = (qemu.get(k).copied(), ferrite.get(k).copied());
        if a != b {
            c.diffs.push((k.clone(), a, b));
        }
    }
    c
}

/// Outcome of one program.
#[derive(Clone, Debug)]
pub enum SysOutcome {
    /// Both dumps present and equal (after filtering); the quirks applied.
    Agree(Vec<&'static str>),
    /// Dumps differ.
    Diverge(SysComparison),
    /// Neither run printed a dump (both stopped early the same way, e.g. a triple fault): counted as
    /// agreement.
    BothNoDump,
    /// A dump is missing on one side (triple fault, hang, ...): both outputs.
    NoDump {
        /// QEMU's output.
        qemu: String,
        /// Ferrite's output.
        ferrite: String,
    },
}

/// Settings of a system-oracle run.
#[derive(Clone, Debug)]
pub struct SysConfig {
    /// Run seed.
    pub seed: u64,
    /// Number of programs.
    pub programs: u64,
    /// Index of the first program (to re-run one program: `first = i, programs = 1`).
    pub first: u64,
    /// Directory with `common.inc`, `sys.inc`, `reset.inc`.
    pub include_dir: PathBuf,
    /// Where sources and images are written (kept as reproducers).
    pub work_dir: PathBuf,
    /// QEMU timeout per program.
    pub timeout: Duration,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            seed: 1,
            programs: 20,
            first: 0,
            include_dir: default_include_dir(),
            work_dir: std::env::temp_dir().join(format!("ferrite-sysrom-{}", std::process::id())),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Result of [`run_sys_difftest`].
#[derive(Clone, Debug, Default)]
pub struct SysReport {
    /// Per program: description and outcome.
    pub results: Vec<(SysProgram, SysOutcome)>,
    /// Count of programs where each quirk was applied.
    pub quirk_counts: BTreeMap<&'static str, u64>,
}

impl SysReport {
    /// Programs whose dumps differ or are missing.
    pub fn divergences(&self) -> usize {
        self.results
            .iter()
            .filter(|(_, o)| !matches!(o, SysOutcome::Agree(_) | SysOutcome::BothNoDump))
            .count()
    }
}

impl std::fmt::Display for SysReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let agree = self.results.len() - self.divergences();
        writeln!(
            f,
            "system oracle (QEMU TCG vs Ferrite): {} programs, {agree} agree, {} differ",
            self.results.len(),
            self.divergences()
        )?;
        for (q, n) in &self.quirk_counts {
            let why = QUIRKS.iter().find(|x| x.name == *q).map(|x| x.why).unwrap_or("");
            writeln!(f, "  filtered by {q} x{n}: {why}")?;
        }
        for (p, o) in &self.results {
            match o {
                SysOutcome::Agree(_) | SysOutcome::BothNoDump => {}
                SysOutcome::Diverge(c) => {
                    writeln!(f, "=== DIVERGENCE {}", p.describe())?;
                    for (k, a, b) in &c.diffs {
                        let h = |v: &Option<u64>| v.map(|x| format!("{x:08x}")).unwrap_or_else(|| "-".into());
                        writeln!(f, "  {k:<4} qemu {}  ferrite {}", h(a), h(b))?;
                    }
                    for d in &p.descs {
                        writeln!(f, "  desc {d:?}")?;
                    }
                }
                SysOutcome::NoDump { qemu, ferrite } => {
                    writeln!(f, "=== NO DUMP {}", p.describe())?;
                    let tail = |s: &str| s.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                    writeln!(f, "  qemu: {}\n  ferrite: {}", tail(qemu), tail(ferrite))?;
                }
            }
        }
        Ok(())
    }
}

/// Generates, assembles and runs `config.programs` programs under QEMU and under `ferrite` (a function
/// that runs a ROM image and returns its debug-console output). Sources and images stay in `work_dir`.
pub fn run_sys_difftest(
    config: &SysConfig,
    ferrite: &mut dyn FnMut(&[u8]) -> String,
) -> Result<SysReport, String> {
    tools_available()?;
    let mut report = SysReport::default();
    for index in config.first..config.first + config.programs {
        let p = generate(config.seed, index);
        let rom = assemble(&p, &config.include_dir, &config.work_dir)?;
        let path = config.work_dir.join(format!("sys_{}_{}.bin", p.seed, p.index));
        let q = run_qemu(&path, config.timeout)?;
        let fo = ferrite(&rom);
        let outcome = match (parse_dump(&q), parse_dump(&fo)) {
            (Some(a), Some(b)) => {
                let c = compare_dumps(&p, &a, &b);
                for (name, _) in &c.filtered {
                    *report.quirk_counts.entry(name).or_default() += 1;
                }
                if c.is_clean() {
                    SysOutcome::Agree(c.filtered.iter().map(|(n, _)| *n).collect())
                } else {
                    SysOutcome::Diverge(c)
                }
            }
            (None, None) => SysOutcome::BothNoDump,
            _ => SysOutcome::NoDump { qemu: q, ferrite: fo },
        };
        report.results.push((p, outcome));
    }
    Ok(report)
}
