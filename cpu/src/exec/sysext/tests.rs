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
