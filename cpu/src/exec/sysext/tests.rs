use super::super::string::testkit::Machine;
use crate::fault::Fault;
use crate::model::CpuModel;
use crate::state::{Seg, cr4, efer, flags};
use crate::testutil::*;

fn machine(mode: TestMode, code: &[u8]) -> Machine {
    let mut m = Machine::new(mode, code);
    m.st.model = CpuModel::max();
    m
}

fn step(m: &mut Machine) -> Result<(), Fault> {
    m.step().map(|_| ())
}

const RDPMC: &[u8] = &[0x0f, 0x33];

#[test]
fn rdpmc_privilege_then_no_counters() {
    // CPL 0, real mode and CR4.PCE = 1 pass the privilege check; no model has counters: #GP(0).
    for (mode, cpl, pce, v86) in [
        (TestMode::Long64, 0, false, false),
        (TestMode::Long64, 3, false, false),
        (TestMode::Long64, 3, true, false),
        (TestMode::Prot32, 3, false, true),
        (TestMode::Real, 0, false, false),
    ] {
        let mut m = machine(mode, RDPMC);
        m.st.cpl = cpl;
        if pce {
            m.st.cr4 |= cr4::PCE;
        }
        if v86 {
            m.st.rflags |= flags::VM;
        }
        m.st.gpr[0] = 0x1111;
        m.st.gpr[1] = 0;
        assert_eq!(step(&mut m), Err(Fault::gp0()), "{mode:?} cpl {cpl} pce {pce}");
        assert_eq!(m.st.gpr[0], 0x1111, "no counter value written");
    }
}

#[test]
fn rdpid_reads_tsc_aux() {
    // 64-bit: RDPID rax (F3 0F C7 /7, mod 11).
    let mut m = machine(TestMode::Long64, &[0xf3, 0x0f, 0xc7, 0xf8]);
    m.st.msr.tsc_aux = 0x1_0203;
    m.st.gpr[0] = u64::MAX;
    m.st.cpl = 3;
    step(&mut m).unwrap();
    assert_eq!(m.st.gpr[0], 0x1_0203);
    // 32-bit mode: the r32 form; real mode too.
    for mode in [TestMode::Prot32, TestMode::Real] {
        let mut m = machine(mode, &[0xf3, 0x0f, 0xc7, 0xf9]); // rdpid ecx
        m.st.msr.tsc_aux = 0xabcd;
        step(&mut m).unwrap();
        assert_eq!(m.st.gpr[1], 0xabcd, "{mode:?}");
    }
}

#[test]
fn serialize_ends_the_block_and_changes_nothing() {
    let mut m = machine(TestMode::Long64, &[0x0f, 0x01, 0xe8]);
    let before = m.st.clone();
    let s = m.step().unwrap();
    assert!(s.break_block);
    assert_eq!((m.st.gpr, m.st.rflags), (before.gpr, before.rflags));
}

const MONITOR: &[u8] = &[0x0f, 0x01, 0xc8];
const MWAIT: &[u8] = &[0x0f, 0x01, 0xc9];

#[test]
fn monitor_mwait_rules() {
    // CPL > 0: #UD for both.
    for code in [MONITOR, MWAIT] {
        let mut m = machine(TestMode::Long64, code);
        m.st.cpl = 3;
        assert_eq!(step(&mut m), Err(Fault::ud()));
    }
    // MONITOR: ECX must be 0; the address is checked like a read (non-canonical: #GP(0)).
    let mut m = machine(TestMode::Long64, MONITOR);
    m.st.gpr[1] = 1;
    assert_eq!(step(&mut m), Err(Fault::gp0()));
    let mut m = machine(TestMode::Long64, MONITOR);
    m.st.gpr[0] = 0x8000_0000_0000;
    assert_eq!(step(&mut m), Err(Fault::gp0()));
    assert!(!m.st.monitor_armed);
    // A segment-limit violation in protected mode: #GP(0).
    let mut m = machine(TestMode::Prot32, MONITOR);
    m.st.sreg_mut(Seg::Ds).limit = 0xfff;
    m.st.gpr[0] = 0x1000;
    assert_eq!(step(&mut m), Err(Fault::gp0()));
    // Armed, then MWAIT with IF = 1 halts and disarms.
    let mut m = machine(TestMode::Long64, &[0x0f, 0x01, 0xc8, 0x0f, 0x01, 0xc9]);
    m.st.gpr[0] = DATA;
    m.st.rflags |= flags::IF;
    step(&mut m).unwrap();
    assert!(m.st.monitor_armed);
    step(&mut m).unwrap();
    assert!(m.st.halted && !m.st.monitor_armed);
    // MWAIT without an armed monitor, or with IF = 0, returns at once.
    for (armed, iflag) in [(false, true), (true, false)] {
        let mut m = machine(TestMode::Long64, MWAIT);
        m.st.monitor_armed = armed;
        if iflag {
            m.st.rflags |= flags::IF;
        }
        step(&mut m).unwrap();
        assert!(!m.st.halted && !m.st.monitor_armed, "armed {armed} IF {iflag}");
    }
    // MWAIT extensions: bit 0 (interrupt break) is allowed, others are #GP(0).
    let mut m = machine(TestMode::Long64, MWAIT);
    m.st.gpr[1] = 1;
    step(&mut m).unwrap();
    let mut m = machine(TestMode::Long64, MWAIT);
    m.st.gpr[1] = 2;
    assert_eq!(step(&mut m), Err(Fault::gp0()));
}

/// INVPCID rax, [DATA] in 64-bit mode with a descriptor (PCID/reserved, address).
fn invpcid(typ: u64, lo: u64, hi: u64, pcide: bool, cpl: u8) -> (Result<(), Fault>, Machine) {
    // 66 0F 38 82 /r with ModRM 04 25 disp32: invpcid rax, [DATA].
    let mut code = vec![0x66, 0x0f, 0x38, 0x82, 0x04, 0x25];
    code.extend_from_slice(&(DATA as u32).to_le_bytes());
    let mut m = machine(TestMode::Long64, &code);
    m.st.gpr[0] = typ;
    m.st.cpl = cpl;
    if pcide {
        m.st.cr4 |= cr4::PCIDE;
    }
    m.poke(DATA, &lo.to_le_bytes());
    m.poke(DATA + 8, &hi.to_le_bytes());
    (step(&mut m), m)
}

#[test]
fn invpcid_checks() {
    assert_eq!(invpcid(0, 0, 0x1000, false, 0).0, Ok(()));
    assert_eq!(invpcid(1, 0, 0, false, 0).0, Ok(()));
    assert_eq!(invpcid(2, 0, 0, false, 0).0, Ok(()));
    assert_eq!(invpcid(3, 0, 0, false, 0).0, Ok(()));
    assert_eq!(invpcid(4, 0, 0, false, 0).0, Err(Fault::gp0()), "type > 3");
    assert_eq!(invpcid(1 << 32, 0, 0, false, 0).0, Err(Fault::gp0()), "the whole register is the type");
    assert_eq!(invpcid(2, 1 << 12, 0, false, 0).0, Err(Fault::gp0()), "reserved descriptor bits");
    assert_eq!(invpcid(0, 5, 0, false, 0).0, Err(Fault::gp0()), "PCID with CR4.PCIDE = 0");
    assert_eq!(invpcid(1, 5, 0, false, 0).0, Err(Fault::gp0()), "PCID with CR4.PCIDE = 0");
    assert_eq!(invpcid(0, 5, 0, true, 0).0, Ok(()));
    assert_eq!(invpcid(2, 5, 0, false, 0).0, Ok(()), "types 2 and 3 ignore the PCID");
    assert_eq!(invpcid(0, 0, 0x8000_0000_0000, true, 0).0, Err(Fault::gp0()), "non-canonical");
    assert_eq!(invpcid(1, 0, 0x8000_0000_0000, true, 0).0, Ok(()), "type 1 ignores the address");
    assert_eq!(invpcid(2, 0, 0, false, 3).0, Err(Fault::gp0()), "CPL 3");
}

#[test]
fn cr4_pcide_rules_follow_the_model() {
    use iced_x86::code_asm::{cr0, cr3, cr4 as cr4r, rax};
    let mov_cr4 = asm(64, |a| a.mov(cr4r, rax).unwrap());
    let pcide_on = |model: CpuModel, cr3v: u64| {
        let mut m = Machine::new(TestMode::Long64, &mov_cr4);
        m.st.model = model;
        m.st.cr3 = cr3v;
        m.st.gpr[0] = m.st.cr4 | cr4::PCIDE;
        step(&mut m).map(|_| m.st.cr4 & cr4::PCIDE != 0)
    };
    assert_eq!(pcide_on(CpuModel::ferrite(), PD - 0x2000), Err(Fault::gp0()), "no PCID on the default model");
    assert_eq!(pcide_on(CpuModel::max(), PD - 0x2000), Ok(true));
    assert_eq!(pcide_on(CpuModel::max(), (PD - 0x2000) | 1), Err(Fault::gp0()), "CR3[11:0] must be 0");
    // Outside IA-32e mode: #GP(0).
    let mut m = Machine::new(
        TestMode::Prot32,
        &asm(32, |a| a.mov(iced_x86::code_asm::cr4, iced_x86::code_asm::eax).unwrap()),
    );
    m.st.model = CpuModel::max();
    m.st.gpr[0] = cr4::PCIDE;
    assert_eq!(step(&mut m), Err(Fault::gp0()));
    // With PCIDE, a CR3 write with bit 63 (no-flush) is accepted and bit 63 is not stored.
    let mut m = Machine::new(TestMode::Long64, &asm(64, |a| a.mov(cr3, rax).unwrap()));
    m.st.model = CpuModel::max();
    m.st.cr4 |= cr4::PCIDE;
    m.st.gpr[0] = (1 << 63) | (PD - 0x2000) | 7;
    step(&mut m).unwrap();
    assert_eq!(m.st.cr3, (PD - 0x2000) | 7);
    // And paging cannot be turned off while PCIDE is set (from compatibility mode).
    let mut m = Machine::new(TestMode::Long64, &asm(32, |a| a.mov(cr0, iced_x86::code_asm::eax).unwrap()));
    let cs = m.st.sreg_mut(Seg::Cs);
    cs.attr = (cs.attr & !crate::state::attr::L) | crate::state::attr::DB;
    m.st.model = CpuModel::max();
    m.st.cr4 |= cr4::PCIDE;
    m.st.gpr[0] = m.st.cr0 & 0x7fff_ffff;
    assert_eq!(step(&mut m), Err(Fault::gp0()));
    assert_ne!(m.st.efer & efer::LMA, 0);
}

/// The TLB's flush rules, observed through stale translations: linear [`G`] (a global page) and [`N`]
/// (not global) map physical 0x40000 and 0x41000 through a 4 KiB page table at [`PT`]; after
/// [`repoint`] the page table maps them to 0x50000 and 0x51000, so a read that still sees the old page
/// came from the TLB. Each page's first dword names it: 1, 2 (old) and 11, 12 (new).
mod flush_rules {
    use super::*;
    use crate::mem::Ctx;

    const PT: u64 = 0x120000;
    const G: u64 = 0x200000;
    const N: u64 = 0x201000;

    fn paged(code: &[u8], pcide: bool) -> Machine {
        let mut m = machine(TestMode::Long64, code);
        m.st.cr4 |= cr4::PGE;
        if pcide {
            m.st.cr4 |= cr4::PCIDE;
        }
        m.poke(PD + 8, &(PT | 3).to_le_bytes());
        m.poke(PT, &(0x40000u64 | 0x103).to_le_bytes());
        m.poke(PT + 8, &(0x41000u64 | 3).to_le_bytes());
        for (a, v) in [(0x40000u64, 1u32), (0x41000, 2), (0x50000, 11), (0x51000, 12)] {
            m.poke(a, &v.to_le_bytes());
        }
        m
    }

    fn read(m: &mut Machine, lin: u64) -> u64 {
        let mut ctx =
            Ctx { st: &mut m.st, bus: &mut m.bus, mmu: &mut m.mmu, next_rip: 0, break_block: false };
        ctx.read_lin(lin, 4).expect("mapped")
    }

    /// Fills the TLB with both pages, then repoints them without INVLPG.
    fn fill_and_repoint(m: &mut Machine) {
        assert_eq!((read(m, G), read(m, N)), (1, 2));
        m.poke(PT, &(0x50000u64 | 0x103).to_le_bytes());
        m.poke(PT + 8, &(0x51000u64 | 3).to_le_bytes());
        assert_eq!((read(m, G), read(m, N)), (1, 2), "the TLB still holds both");
    }

    /// MOV to CR3 drops non-global entries and keeps global ones (CR4.PGE); turning CR4.PGE off
    /// drops the global ones too (SDM Vol. 3A 4.10.4.1).
    #[test]
    fn cr3_keeps_global_pages_and_pge_toggle_drops_them() {
        let code = asm(64, |a| {
            use iced_x86::code_asm::*;
            a.mov(cr3, rax).unwrap();
            a.mov(cr4, rbx).unwrap();
        });
        let mut m = paged(&code, false);
        m.st.gpr[0] = m.st.cr3;
        m.st.gpr[3] = m.st.cr4 & !cr4::PGE;
        fill_and_repoint(&mut m);
        step(&mut m).expect("mov cr3");
        assert_eq!((read(&mut m, G), read(&mut m, N)), (1, 12), "CR3 write: the global page stays");
        step(&mut m).expect("mov cr4");
        assert_eq!(read(&mut m, G), 11, "CR4.PGE off drops global pages");
    }

    /// With CR4.PCIDE = 1, a CR3 write with bit 63 set does not store the bit; it may keep the
    /// PCID's entries, which this TLB does when the PCID stays the same; a write that changes the
    /// PCID, or has bit 63 clear, drops the non-global entries.
    #[test]
    fn cr3_no_flush_bit_with_pcids() {
        let code = asm(64, |a| {
            use iced_x86::code_asm::*;
            a.mov(cr3, rax).unwrap();
        });
        for (pcid, bit63, kept) in [(0u64, true, true), (5, true, false), (0, false, false)] {
            let mut m = paged(&code, true);
            let base = m.st.cr3;
            m.st.gpr[0] = base | pcid | if bit63 { 1 << 63 } else { 0 };
            fill_and_repoint(&mut m);
            step(&mut m).expect("mov cr3");
            assert_eq!(m.st.cr3, base | pcid, "bit 63 is not stored");
            let want = if kept { (1, 2) } else { (1, 12) };
            assert_eq!((read(&mut m, G), read(&mut m, N)), want, "PCID {pcid} bit 63 {bit63}");
        }
    }

    /// INVPCID's four types on the current PCID (3): type 0 drops the page, 1 and 3 every non-global
    /// entry, 2 everything; types 0 and 1 for another PCID leave the current one's entries (the TLB
    /// holds no other PCID's).
    #[test]
    fn invpcid_types_drop_what_they_must() {
        // invpcid rax, [DATA]
        let mut code = vec![0x66, 0x0f, 0x38, 0x82, 0x04, 0x25];
        code.extend_from_slice(&(DATA as u32).to_le_bytes());
        for (typ, pcid, addr, want) in [
            (0u64, 3u64, N, (1, 12)),
            (0, 3, G, (11, 2)),
            (0, 4, N, (1, 2)),
            (1, 3, 0, (1, 12)),
            (1, 4, 0, (1, 2)),
            (2, 9, 0, (11, 12)),
            (3, 9, 0, (1, 12)),
        ] {
            let mut m = paged(&code, true);
            m.st.cr3 |= 3;
            m.st.gpr[0] = typ;
            m.poke(DATA, &pcid.to_le_bytes());
            m.poke(DATA + 8, &addr.to_le_bytes());
            fill_and_repoint(&mut m);
            step(&mut m).expect("invpcid");
            assert_eq!((read(&mut m, G), read(&mut m, N)), want, "type {typ} PCID {pcid} {addr:#x}");
        }
    }
}
