//! Tests of the KVM engine's conversions and ioctl numbers (no /dev/kvm needed).

use super::*;
use cpu::state::{Seg, efer};

/// A CpuState with something distinctive in every field that moves to KVM.
fn sample() -> CpuState {
    let mut c = CpuState::default();
    for (i, g) in c.gpr.iter_mut().enumerate() {
        *g = 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1);
    }
    c.rip = 0xffff_8000_0000_1234;
    c.rflags = flags::FIXED1 | flags::IF | flags::CF | flags::ZF;
    c.cr0 = cr0::PE | cr0::PG | cr0::ET | cr0::NE | cr0::WP;
    c.cr2 = 0xdead_b000;
    c.cr3 = 0x12_3000;
    c.cr4 = 0x6a0;
    c.cr8 = 5;
    c.efer = efer::LME | efer::LMA | efer::SCE | efer::NXE;
    c.seg[Seg::Cs as usize] = Segment {
        selector: 0x08,
        attr: attr::P | attr::S | attr::CODE | attr::RW | attr::L | attr::ACCESSED,
        limit: 0xffff_ffff,
        base: 0,
    };
    c.seg[Seg::Ss as usize] = Segment {
        selector: 0x13,
        attr: attr::P | attr::S | attr::RW | attr::ACCESSED | attr::DB | attr::G | (3 << attr::DPL_SHIFT),
        limit: 0xffff_ffff,
        base: 0,
    };
    c.seg[Seg::Fs as usize] = Segment { selector: 0, attr: 0, limit: 0, base: 0x7fff_0000_1000 };
    c.seg[Seg::Gs as usize] = Segment {
        selector: 0x2b,
        attr: attr::P | attr::S | attr::RW | attr::AVL,
        limit: 0xfffff,
        base: 0xffff_8888_0000_0000,
    };
    c.ldtr = Segment { selector: 0x30, attr: attr::P | 2, limit: 0x7f, base: 0x9000 };
    c.tr = Segment { selector: 0x40, attr: attr::P | 0xb, limit: 0x67, base: 0xffff_8000_0000_5000 };
    c.gdtr = DescTable { base: 0xffff_8000_0000_2000, limit: 0x57, _pad: 0 };
    c.idtr = DescTable { base: 0xffff_8000_0000_3000, limit: 0xfff, _pad: 0 };
    c.dr = [1, 2, 3, 4, 0xffff_4ff1, 0x402, 0xffff_4ff1, 0x402];
    c.cpl = 3;
    c.msr.sysenter_cs = 0x10;
    c.msr.sysenter_esp = 0x8000;
    c.msr.sysenter_eip = 0x9000;
    c.msr.star = 0x0023_0010_0000_0000;
    c.msr.lstar = 0xffff_8000_0000_4000;
    c.msr.cstar = 0xffff_8000_0000_4800;
    c.msr.sfmask = 0x4700;
    c.msr.kernel_gs_base = 0xffff_8000_dead_0000;
    c.msr.tsc_aux = 7;
    c.msr.pat = 0x0007_0406_0007_0406;
    c.msr.apic_base = 0xfee0_0900;
    c.msr.mtrr_fixed[3] = 0x0606_0606_0606_0606;
    c.msr.mtrr_var[1] = 0xf_f000_0800;
    c.icount = 1000;
    c.irq_shadow_icount = 1000;
    c.nmi_blocked = true;
    c.xcr0 = 7;
    for (i, y) in c.vec.ymm_hi.iter_mut().enumerate() {
        *y = 0xfeed_0000_0000_0000_0000_0000_0000_0000u128 | ((i as u128 + 1) * 0x0101_0101_0101);
    }
    // x87: TOP = 6, R6 = 1.0, R7 = 0.0, R0 = NaN (special); the others empty.
    let one: u128 = (0x3fffu128 << 64) | (1u128 << 63);
    c.fpu.st[6] = one;
    c.fpu.st[7] = 0;
    c.fpu.st[0] = (0x7fffu128 << 64) | (3u128 << 62);
    c.fpu.fsw = 6 << 11;
    c.fpu.ftw = 0b01_00_11_11_11_11_11_10;
    c.fpu.fcw = 0x37f;
    c.fpu.fop = 0x5d9;
    c.fpu.fip = 0x401000;
    c.fpu.fdp = 0x402000;
    c.fpu.fcs = 0x1b;
    c.fpu.fds = 0x23;
    for (i, x) in c.fpu.xmm.iter_mut().enumerate() {
        *x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.rotate_left(i as u32 * 8);
    }
    c.fpu.mxcsr = 0x1fa0;
    c
}

fn assert_same(a: &CpuState, b: &CpuState) {
    assert_eq!(a.gpr, b.gpr);
    assert_eq!(a.rip, b.rip);
    assert_eq!(a.rflags, b.rflags);
    assert_eq!(a.seg, b.seg);
    assert_eq!(a.ldtr, b.ldtr);
    assert_eq!(a.tr, b.tr);
    assert_eq!(a.gdtr, b.gdtr);
    assert_eq!(a.idtr, b.idtr);
    assert_eq!((a.cr0, a.cr2, a.cr3, a.cr4, a.cr8, a.efer), (b.cr0, b.cr2, b.cr3, b.cr4, b.cr8, b.efer));
    assert_eq!(a.dr, b.dr);
    assert_eq!(a.cpl, b.cpl);
    assert_eq!(a.msr, b.msr);
    assert_eq!(a.fpu, b.fpu);
    assert_eq!(a.irq_shadow_icount, b.irq_shadow_icount);
    assert_eq!(a.nmi_blocked, b.nmi_blocked);
    assert_eq!(a.xcr0, b.xcr0);
    assert_eq!(a.vec.ymm_hi, b.vec.ymm_hi);
}

/// PKRU at byte 2688 of the standard-format image, XSTATE_BV bit 9 saying whether it is there; the
/// rest of the image untouched; 0 written as the initial state.
#[test]
fn pkru_in_the_xsave_image() {
    let mut region = [0u32; 1024];
    region[128] = 0x7; // XSTATE_BV: x87 | SSE | AVX
    region[671] = 0xdead_beef; // the dword before PKRU
    pkru_into_xsave(&mut region, 0x5555_5554);
    assert_eq!((region[128], region[672], region[673], region[671]), (0x207, 0x5555_5554, 0, 0xdead_beef));
    assert_eq!(pkru_from_xsave(&region), 0x5555_5554);
    region[128] = 0x7;
    assert_eq!(pkru_from_xsave(&region), 0, "bit 9 clear: the initial state");
    region[128] = 0x207;
    pkru_into_xsave(&mut region, 0);
    assert_eq!(region[128], 0x7);
}

#[test]
fn ymm_upper_halves_in_the_xsave_image() {
    let mut region = [0u32; 1024];
    // Bytes outside the AVX component and XSTATE_BV's bit 2 are KVM's and stay as they were.
    region[0] = 0x037f;
    region[128] = 0x3; // XSTATE_BV: x87 | SSE
    region[144 - 1] = 0xdead_beef; // the last dword before the AVX component (byte 572)
    region[208] = 0xcafe_f00d; // the first dword after it (byte 832)
    let mut ymm = [0u128; 16];
    ymm[0] = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff;
    ymm[15] = 1u128 << 127;
    ymm_hi_into_xsave(&mut region, &ymm);
    assert_eq!(region[128], 0x7, "AVX marked present in XSTATE_BV");
    assert_eq!(region[144], 0xccdd_eeff, "YMM0[159:128] at byte 576");
    assert_eq!(region[144 + 63], 0x8000_0000, "YMM15[255:224] at byte 828");
    assert_eq!((region[0], region[143], region[208]), (0x037f, 0xdead_beef, 0xcafe_f00d));
    assert_eq!(ymm_hi_from_xsave(&region), ymm);
    // XSTATE_BV bit 2 clear: the component is in its initial state, whatever the bytes say.
    region[128] = 0x3;
    assert_eq!(ymm_hi_from_xsave(&region), [0; 16]);
    // All zero: written as the initial state.
    region[128] = 0x7;
    ymm_hi_into_xsave(&mut region, &[0; 16]);
    assert_eq!(region[128], 0x3);
    assert_eq!(ymm_hi_from_xsave(&region), [0; 16]);
}

#[test]
fn round_trip_long_mode_state() {
    let a = sample();
    let k = KvmState::from_cpu(&a);
    assert_eq!(k.shadow, KVM_X86_SHADOW_INT_STI as u8);
    let mut b = CpuState { icount: a.icount, ..Default::default() };
    b.fpu.fcs = a.fpu.fcs;
    b.fpu.fds = a.fpu.fds;
    k.apply_to(&mut b);
    assert_same(&a, &b);
    // And back again: the same KVM structures.
    assert_eq!(KvmState::from_cpu(&b), k);
}

#[test]
fn round_trip_reset_state() {
    let a = CpuState::default();
    let k = KvmState::from_cpu(&a);
    assert_eq!(k.shadow, 0);
    assert_eq!(k.sregs.cs.base, 0xffff_0000);
    assert_eq!(k.sregs.cs.type_, 0xb);
    assert_eq!(k.regs.rip, 0xfff0);
    let mut b = sample();
    b.icount = a.icount;
    b.fpu.fcs = 0;
    b.fpu.fds = 0;
    k.apply_to(&mut b);
    assert_same(&a, &b);
}

#[test]
fn kvm_layout_details() {
    let a = sample();
    let k = KvmState::from_cpu(&a);
    // GPR order: Ferrite's RCX is index 1, RBX index 3.
    assert_eq!(k.regs.rcx, a.gpr[1]);
    assert_eq!(k.regs.rbx, a.gpr[3]);
    assert_eq!(k.regs.rsp, a.gpr[4]);
    assert_eq!(k.regs.rdi, a.gpr[7]);
    // Segments: a not-present segment is unusable; attribute bits split out.
    assert_eq!(k.sregs.fs.unusable, 1);
    assert_eq!(k.sregs.cs.l, 1);
    assert_eq!(k.sregs.ss.dpl, 3);
    assert_eq!((k.sregs.ss.db, k.sregs.ss.g), (1, 1));
    assert_eq!(k.sregs.gs.avl, 1);
    assert_eq!(k.sregs.tr.type_, 0xb);
    // FPU: stack order in KVM, abridged tags by physical register.
    assert_eq!(&k.fpu.fpr[0][..10], &a.fpu.st[6].to_le_bytes()[..10]);
    assert_eq!(&k.fpu.fpr[2][..10], &a.fpu.st[0].to_le_bytes()[..10]);
    assert_eq!(k.fpu.ftwx, 0b1100_0001);
    // MSRs: every Msrs field except the APIC base (in sregs) and the TSC offset.
    assert_eq!(k.sregs.apic_base, 0xfee0_0900);
    assert!(k.msrs.iter().any(|e| e.index == 0xc000_0082 && e.data == a.msr.lstar));
    assert!(!k.msrs.iter().any(|e| e.index == MSR_APIC_BASE));
    // Shadow with IF=0 must be MOV SS (VMX refuses STI blocking with IF clear).
    let mut c = a.clone();
    c.rflags &= !flags::IF;
    assert_eq!(KvmState::from_cpu(&c).shadow, KVM_X86_SHADOW_INT_MOV_SS as u8);
}

#[test]
fn cpl_follows_kvm_rules() {
    let mut c = sample();
    let k = KvmState::from_cpu(&c);
    c.rflags |= flags::VM;
    let mut r = k.clone();
    r.regs.rflags |= flags::VM;
    r.apply_to(&mut c);
    assert_eq!(c.cpl, 3);
    let mut r = k.clone();
    r.sregs.cr0 &= !cr0::PE;
    r.apply_to(&mut c);
    assert_eq!(c.cpl, 0);
}

#[test]
fn x87_tags_are_rebuilt_from_contents() {
    assert_eq!(x87_tag(0), 1);
    assert_eq!(x87_tag((0x3fffu128 << 64) | (1u128 << 63)), 0);
    assert_eq!(x87_tag(0x7fffu128 << 64), 2, "infinity/NaN");
    assert_eq!(x87_tag(1), 2, "denormal");
    assert_eq!(x87_tag(0x3fffu128 << 64), 2, "unnormal");
}

fn entry(function: u32, index: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
    kvm_cpuid_entry2 {
        function,
        index,
        flags: 0,
        eax: r[0],
        ebx: r[1],
        ecx: r[2],
        edx: r[3],
        padding: [0; 3],
    }
}

#[test]
fn cpuid_is_ferrites_model_masked_by_the_host() {
    // A host that has everything except RDRAND (leaf 1 ECX bit 30) and 1 GiB pages, with 39-bit
    // physical addresses, and KVM's own signature leaf.
    let host = vec![
        entry(0, 0, [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        entry(1, 0, [0x800f12, 0, !(1 << 30), !0]),
        kvm_cpuid_entry2 { flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX, ..entry(7, 0, [0, !0, !0, !0]) },
        entry(0x4000_0000, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
        entry(0x8000_0001, 0, [0, 0, !0, !(1 << 26)]),
        entry(0x8000_0008, 0, [0x3027, 0, 0, 0]),
    ];
    let t = guest_cpuid(&host);
    let get = |f: u32| t.iter().find(|e| e.function == f).copied();
    // Ferrite's vendor and signature, not the host's.
    let l0 = get(0).unwrap();
    assert_eq!(l0.eax, cpu::cpuid::cpuid(0, 0, 0)[0]);
    assert_eq!(l0.ebx, cpu::cpuid::cpuid(0, 0, 0)[1]);
    assert_eq!(get(1).unwrap().eax, cpu::cpuid::SIGNATURE);
    // Ferrite's features masked by the host's.
    let l1 = get(1).unwrap();
    assert_eq!(l1.ecx, cpu::cpuid::feat::LEAF1_ECX & !(1 << 30));
    assert_eq!(l1.edx, cpu::cpuid::feat::LEAF1_EDX);
    assert_eq!(get(7).unwrap().ebx, cpu::cpuid::feat::LEAF7_EBX);
    assert_eq!(get(7).unwrap().flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
    assert_eq!(get(0x8000_0001).unwrap().edx, cpu::cpuid::feat::EXT1_EDX & !(1 << 26));
    // The smaller physical address width.
    assert_eq!(get(0x8000_0008).unwrap().eax & 0xff, 39);
    // No KVM paravirtual leaves, nothing past Ferrite's limits.
    assert!(get(0x4000_0000).is_none());
    assert!(t.iter().all(|e| e.function <= l0.eax || (0x8000_0000..=0x8000_0008).contains(&e.function)));
    // XSAVE leaf: sub-leaves 0 and 1, index-significant, components masked by the host's (none here).
    let xs: Vec<_> = t.iter().filter(|e| e.function == 0xd).collect();
    if cpu::cpuid::cpuid(0, 0, 0)[0] >= 0xd {
        assert!(xs.iter().all(|e| e.flags == KVM_CPUID_FLAG_SIGNIFCANT_INDEX));
        assert!(xs.iter().any(|e| e.index == 0 && e.eax == 0));
    }
    // Ferrite's 1 GHz TSC/crystal leaves are not the rates under KVM: not given, even by a host that has them.
    let host_tsc = vec![entry(0x15, 0, [2, 100, 25_000_000, 0]), entry(0x16, 0, [2000, 3000, 100, 0])];
    let t15 = guest_cpuid(&host_tsc);
    for f in [0x15, 0x16] {
        let e = t15.iter().find(|e| e.function == f).copied();
        assert!(e.is_none_or(|e| [e.eax, e.ebx, e.ecx, e.edx] == [0; 4]), "leaf {f:#x} under KVM");
    }
    // A host lacking a leaf entirely clears its features.
    let t = guest_cpuid(&[]);
    assert_eq!(t.iter().find(|e| e.function == 1).unwrap().ecx, 0);
}

#[test]
fn ioctl_numbers() {
    assert_eq!(KVM_INTERRUPT, 0x4004_ae86);
    assert_eq!(KVM_SET_SIGNAL_MASK, 0x4004_ae8b);
}

#[test]
fn describes_instructions() {
    assert_eq!(describe_insn(&[0x27], 16), "daa [27]");
    assert!(describe_insn(&[0xf3, 0x0f, 0xb8, 0xc1], 32).starts_with("popcnt"));
    assert_eq!(describe_insn(&[], 64), "instruction bytes unavailable");
}

/// KVM_SET_GUEST_DEBUG on this host: each of single-step, a hardware breakpoint and INT3 either works
/// (the vCPU stops exactly where it must) or is refused by the host, which the test prints as a skip with
/// the reason; accepted but wrong fails. Skips (printing why) when /dev/kvm cannot run a guest.
#[test]
fn guest_debugging_stops_where_it_must_or_is_refused_in_one_line() {
    let found = match probe_guest_debug() {
        Ok(f) => f,
        Err(why) => {
            println!("skipped: /dev/kvm unusable ({why})");
            return;
        }
    };
    for (what, d) in [
        ("single-step", &found.single_step),
        ("hardware breakpoint", &found.hw_breakpoint),
        ("software breakpoint", &found.sw_breakpoint),
        ("hardware watchpoint", &found.hw_watchpoint),
    ] {
        match d {
            GuestDebug::Works => println!("{what}: works"),
            GuestDebug::Refused(why) => println!("skipped: {what}: the host refuses it ({why})"),
            GuestDebug::Ignored(why) => println!("skipped: {what}: {why}"),
            GuestDebug::Wrong(how) => panic!("{what}: KVM accepted it but {how}"),
        }
    }
}
