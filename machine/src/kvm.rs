//! The KVM engine: runs the CPU with hardware virtualization through /dev/kvm, with the same guest RAM
//! mapping and the same userspace devices (port and MMIO exits go to the [`Board`]).
//!
//! How it works (see also `docs/KVM.md`):
//! - One VM with one vCPU and no in-kernel irqchip: the PIC, I/O APIC and local APIC stay Ferrite's
//!   own. Interrupts are injected with `KVM_INTERRUPT` when `ready_for_interrupt_injection` says the
//!   vCPU can take one, otherwise `request_interrupt_window` asks KVM to exit when it can.
//! - Guest RAM regions of the board's address map become KVM memory slots backed by the board's own
//!   RAM mapping (devices, DMA and the interpreter see the same bytes). ROM regions become read-only
//!   slots (writes exit as MMIO and are dropped by the board). Everything else is unmapped: accesses
//!   exit as MMIO and go to [`Board`]'s `read_phys`/`write_phys`, port I/O to `io_in`/`io_out`.
//! - State moves between KVM and [`CpuState`] at the entry and exit of [`KvmEngine::run`], through the
//!   pure conversion functions below ([`KvmState`]), so the machine can switch engine between slices.
//! - Time is host time (the machine puts its clock in host-time mode): `cpu.icount` is the clock's
//!   instruction-slot count (host nanoseconds scaled by the configured speed), updated at every exit,
//!   and a POSIX timer kicks the vCPU out of `KVM_RUN` when the slice's deadline passes.

use crate::board::Board;
use crate::engine::Engine;
use cpu::state::{DescTable, FpuState, Msrs, Segment, attr, cr0, flags};
use cpu::{CpuBus, CpuState, Exit, Stop};
use kvm_bindings::{
    CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY,
    KVM_MSR_EXIT_REASON_INVAL, KVM_MSR_EXIT_REASON_UNKNOWN, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_X86_SHADOW_INT_MOV_SS, KVM_X86_SHADOW_INT_STI, kvm_cpuid_entry2, kvm_debugregs, kvm_dtable,
    kvm_enable_cap, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
use mmu::map::{Region, RegionKind};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------
// Pure conversions between CpuState and KVM's structures.
// ---------------------------------------------------------------------------------------------------

/// A segment register (with its hidden part) in KVM's layout. A segment that is not present is
/// passed as unusable (KVM's and VMX's notion of a null/unloaded segment).
pub fn seg_to_kvm(s: &Segment) -> kvm_segment {
    let a = s.attr;
    let bit = |m: u16| u8::from(a & m != 0);
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & attr::TYPE) as u8,
        present: bit(attr::P),
        dpl: ((a & attr::DPL) >> attr::DPL_SHIFT) as u8,
        db: bit(attr::DB),
        s: bit(attr::S),
        l: bit(attr::L),
        g: bit(attr::G),
        avl: bit(attr::AVL),
        unusable: u8::from(a & attr::P == 0),
        padding: 0,
    }
}

/// A segment register from KVM's layout (an unusable segment reads back as not present).
pub fn seg_from_kvm(k: &kvm_segment) -> Segment {
    let flag = |v: u8, m: u16| if v != 0 { m } else { 0 };
    let mut a = (k.type_ as u16 & attr::TYPE)
        | flag(k.s, attr::S)
        | ((k.dpl as u16 & 3) << attr::DPL_SHIFT)
        | flag(k.present, attr::P)
        | flag(k.avl, attr::AVL)
        | flag(k.l, attr::L)
        | flag(k.db, attr::DB)
        | flag(k.g, attr::G);
    if k.unusable != 0 {
        a &= !attr::P;
    }
    Segment { selector: k.selector, attr: a, limit: k.limit, base: k.base }
}

fn dtable_to_kvm(d: &DescTable) -> kvm_dtable {
    kvm_dtable { base: d.base, limit: d.limit.min(0xffff) as u16, padding: [0; 3] }
}

fn dtable_from_kvm(d: &kvm_dtable) -> DescTable {
    DescTable { base: d.base, limit: d.limit as u32, _pad: 0 }
}

/// General registers, RIP and RFLAGS in KVM's layout (Ferrite's GPR order is the encoding order:
/// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
pub fn regs_to_kvm(cpu: &CpuState) -> kvm_regs {
    let g = &cpu.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: cpu.rip,
        rflags: cpu.rflags,
    }
}

/// Writes KVM's general registers into `cpu`.
pub fn regs_from_kvm(k: &kvm_regs, cpu: &mut CpuState) {
    cpu.gpr = [
        k.rax, k.rcx, k.rdx, k.rbx, k.rsp, k.rbp, k.rsi, k.rdi, k.r8, k.r9, k.r10, k.r11, k.r12, k.r13,
        k.r14, k.r15,
    ];
    cpu.rip = k.rip;
    cpu.rflags = k.rflags;
}

/// Segments, descriptor tables, control registers, EFER and the APIC base in KVM's layout.
pub fn sregs_to_kvm(cpu: &CpuState) -> kvm_sregs {
    let s = |i: usize| seg_to_kvm(&cpu.seg[i]);
    kvm_sregs {
        es: s(0),
        cs: s(1),
        ss: s(2),
        ds: s(3),
        fs: s(4),
        gs: s(5),
        tr: seg_to_kvm(&cpu.tr),
        ldt: seg_to_kvm(&cpu.ldtr),
        gdt: dtable_to_kvm(&cpu.gdtr),
        idt: dtable_to_kvm(&cpu.idtr),
        cr0: cpu.cr0,
        cr2: cpu.cr2,
        cr3: cpu.cr3,
        cr4: cpu.cr4,
        cr8: cpu.cr8,
        efer: cpu.efer,
        apic_base: cpu.msr.apic_base,
        interrupt_bitmap: [0; 4],
    }
}

/// Writes KVM's special registers into `cpu` and derives the CPL as KVM does (SS.DPL in protected
/// mode; 0 in real mode; 3 in virtual-8086 mode). Call after [`regs_from_kvm`] (RFLAGS.VM matters).
pub fn sregs_from_kvm(k: &kvm_sregs, cpu: &mut CpuState) {
    for (i, s) in [&k.es, &k.cs, &k.ss, &k.ds, &k.fs, &k.gs].into_iter().enumerate() {
        cpu.seg[i] = seg_from_kvm(s);
    }
    cpu.tr = seg_from_kvm(&k.tr);
    cpu.ldtr = seg_from_kvm(&k.ldt);
    cpu.gdtr = dtable_from_kvm(&k.gdt);
    cpu.idtr = dtable_from_kvm(&k.idt);
    cpu.cr0 = k.cr0;
    cpu.cr2 = k.cr2;
    cpu.cr3 = k.cr3;
    cpu.cr4 = k.cr4;
    cpu.cr8 = k.cr8;
    cpu.efer = k.efer;
    cpu.msr.apic_base = k.apic_base;
    cpu.cpl = if cpu.cr0 & cr0::PE == 0 {
        0
    } else if cpu.rflags & flags::VM != 0 {
        3
    } else {
        k.ss.dpl & 3
    };
}

/// The x87 tag (00 valid, 01 zero, 10 special) of an 80-bit register value, as FSTENV reports it.
fn x87_tag(v: u128) -> u16 {
    let exp = ((v >> 64) & 0x7fff) as u16;
    let mant = v as u64;
    if exp == 0x7fff {
        2
    } else if exp == 0 {
        if mant == 0 { 1 } else { 2 }
    } else if mant >> 63 == 0 {
        2 // unnormal
    } else {
        0
    }
}

/// x87/SSE state in KVM_GET/SET_FPU's layout (the FXSAVE image: registers in stack order, abridged tag
/// word indexed by physical register).
pub fn fpu_to_kvm(f: &FpuState) -> kvm_fpu {
    let top = ((f.fsw >> 11) & 7) as usize;
    let mut fpr = [[0u8; 16]; 8];
    for (i, r) in fpr.iter_mut().enumerate() {
        r[..10].copy_from_slice(&f.st[(top + i) & 7].to_le_bytes()[..10]);
    }
    let mut ftwx = 0u8;
    for phys in 0..8 {
        if (f.ftw >> (2 * phys)) & 3 != 3 {
            ftwx |= 1 << phys;
        }
    }
    let mut xmm = [[0u8; 16]; 16];
    for (d, s) in xmm.iter_mut().zip(f.xmm.iter()) {
        *d = s.to_le_bytes();
    }
    kvm_fpu {
        fpr,
        fcw: f.fcw,
        fsw: f.fsw,
        ftwx,
        pad1: 0,
        last_opcode: f.fop,
        last_ip: f.fip,
        last_dp: f.fdp,
        xmm,
        mxcsr: f.mxcsr,
        pad2: 0,
    }
}

/// x87/SSE state from KVM's layout. The full tag word is rebuilt from the abridged one and the register
/// contents; the x87 CS/DS selectors are not in KVM's image (64-bit FXSAVE format) and are kept from
/// `prev`.
pub fn fpu_from_kvm(k: &kvm_fpu, prev: &FpuState) -> FpuState {
    let top = ((k.fsw >> 11) & 7) as usize;
    let mut st = [0u128; 8];
    for (i, r) in k.fpr.iter().enumerate() {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&r[..10]);
        st[(top + i) & 7] = u128::from_le_bytes(b);
    }
    let mut ftw = 0u16;
    for (phys, v) in st.iter().enumerate() {
        let tag = if k.ftwx & (1 << phys) == 0 { 3 } else { x87_tag(*v) };
        ftw |= tag << (2 * phys);
    }
    let mut xmm = [0u128; 16];
    for (d, s) in xmm.iter_mut().zip(k.xmm.iter()) {
        *d = u128::from_le_bytes(*s);
    }
    FpuState {
        st,
        xmm,
        fcw: k.fcw,
        fsw: k.fsw,
        ftw,
        fop: k.last_opcode & 0x7ff,
        mxcsr: k.mxcsr,
        fip: k.last_ip,
        fdp: k.last_dp,
        ..*prev
    }
}

/// IA32_SYSENTER_CS.
const MSR_SYSENTER_CS: u32 = 0x174;
/// IA32_TSC.
const MSR_TSC: u32 = 0x10;
/// IA32_APIC_BASE.
const MSR_APIC_BASE: u32 = 0x1b;

/// The MSRs of [`Msrs`] that move between KVM and `CpuState` (the APIC base moves with the special
/// registers), as (index, value) pairs.
pub fn msrs_to_kvm(m: &Msrs) -> Vec<kvm_msr_entry> {
    let mut v = vec![
        (MSR_SYSENTER_CS, m.sysenter_cs),
        (0x175, m.sysenter_esp),
        (0x176, m.sysenter_eip),
        (0xc000_0081, m.star),
        (0xc000_0082, m.lstar),
        (0xc000_0083, m.cstar),
        (0xc000_0084, m.sfmask),
        (0xc000_0102, m.kernel_gs_base),
        (0xc000_0103, m.tsc_aux),
        (0x277, m.pat),
        (0x1a0, m.misc_enable),
        (0x2ff, m.mtrr_def_type),
        (0x3a, m.feature_control),
        (0x1d9, m.debugctl),
    ];
    for (i, idx) in MTRR_FIXED.iter().enumerate() {
        v.push((*idx, m.mtrr_fixed[i]));
    }
    for i in 0..16 {
        v.push((0x200 + i as u32, m.mtrr_var[i]));
    }
    v.into_iter().map(|(index, data)| kvm_msr_entry { index, reserved: 0, data }).collect()
}

const MTRR_FIXED: [u32; 11] = [0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f];

/// Stores MSR `index` = `data` into `m`; false for an MSR that [`msrs_to_kvm`] does not list.
pub fn msr_from_kvm(m: &mut Msrs, index: u32, data: u64) -> bool {
    let slot = match index {
        MSR_SYSENTER_CS => &mut m.sysenter_cs,
        0x175 => &mut m.sysenter_esp,
        0x176 => &mut m.sysenter_eip,
        0xc000_0081 => &mut m.star,
        0xc000_0082 => &mut m.lstar,
        0xc000_0083 => &mut m.cstar,
        0xc000_0084 => &mut m.sfmask,
        0xc000_0102 => &mut m.kernel_gs_base,
        0xc000_0103 => &mut m.tsc_aux,
        0x277 => &mut m.pat,
        0x1a0 => &mut m.misc_enable,
        0x2ff => &mut m.mtrr_def_type,
        0x3a => &mut m.feature_control,
        0x1d9 => &mut m.debugctl,
        0x200..=0x20f => &mut m.mtrr_var[(index - 0x200) as usize],
        _ => match MTRR_FIXED.iter().position(|&i| i == index) {
            Some(i) => &mut m.mtrr_fixed[i],
            None => return false,
        },
    };
    *slot = data;
    true
}

/// DR0-DR3, DR6, DR7 in KVM's layout.
pub fn debugregs_to_kvm(cpu: &CpuState) -> kvm_debugregs {
    kvm_debugregs {
        db: [cpu.dr[0], cpu.dr[1], cpu.dr[2], cpu.dr[3]],
        dr6: cpu.dr[6],
        dr7: cpu.dr[7],
        flags: 0,
        reserved: [0; 9],
    }
}

/// Debug registers from KVM (DR4/DR5 alias DR6/DR7).
pub fn debugregs_from_kvm(k: &kvm_debugregs, cpu: &mut CpuState) {
    cpu.dr[..4].copy_from_slice(&k.db);
    cpu.dr[6] = k.dr6;
    cpu.dr[7] = k.dr7;
    cpu.dr[4] = k.dr6;
    cpu.dr[5] = k.dr7;
}

/// The whole vCPU state that moves between `CpuState` and KVM.
#[derive(Clone, Debug, PartialEq)]
pub struct KvmState {
    /// GPRs, RIP, RFLAGS.
    pub regs: kvm_regs,
    /// Segments, tables, control registers, EFER, APIC base.
    pub sregs: kvm_sregs,
    /// x87/SSE.
    pub fpu: kvm_fpu,
    /// The MSRs of `CpuState::msr` (see [`msrs_to_kvm`]).
    pub msrs: Vec<kvm_msr_entry>,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// Interrupt shadow: 0, `KVM_X86_SHADOW_INT_STI` or `KVM_X86_SHADOW_INT_MOV_SS`.
    pub shadow: u8,
    /// NMIs blocked (an NMI handler is running).
    pub nmi_masked: bool,
    /// XCR0.
    pub xcr0: u64,
}

impl KvmState {
    /// Converts `cpu` to KVM's structures.
    pub fn from_cpu(cpu: &CpuState) -> KvmState {
        let shadow = if cpu.irq_shadow_icount != cpu.icount {
            0
        } else if cpu.rflags & flags::IF != 0 {
            // VMX refuses STI blocking with IF=0; an STI shadow always has IF=1.
            KVM_X86_SHADOW_INT_STI as u8
        } else {
            KVM_X86_SHADOW_INT_MOV_SS as u8
        };
        KvmState {
            regs: regs_to_kvm(cpu),
            sregs: sregs_to_kvm(cpu),
            fpu: fpu_to_kvm(&cpu.fpu),
            msrs: msrs_to_kvm(&cpu.msr),
            debugregs: debugregs_to_kvm(cpu),
            shadow,
            nmi_masked: cpu.nmi_blocked,
            xcr0: cpu.xcr0,
        }
    }

    /// Writes this state into `cpu` (whose `icount` must already be current: the interrupt shadow is
    /// expressed relative to it).
    pub fn apply_to(&self, cpu: &mut CpuState) {
        regs_from_kvm(&self.regs, cpu);
        sregs_from_kvm(&self.sregs, cpu);
        cpu.fpu = fpu_from_kvm(&self.fpu, &cpu.fpu);
        for e in &self.msrs {
            msr_from_kvm(&mut cpu.msr, e.index, e.data);
        }
        debugregs_from_kvm(&self.debugregs, cpu);
        cpu.irq_shadow_icount = if self.shadow != 0 { cpu.icount } else { u64::MAX };
        cpu.nmi_blocked = self.nmi_masked;
        cpu.xcr0 = self.xcr0;
    }
}

// ---------------------------------------------------------------------------------------------------
// CPUID.
// ---------------------------------------------------------------------------------------------------

/// Leaves whose subleaf (ECX) KVM must match.
fn index_significant(leaf: u32) -> bool {
    matches!(
        leaf,
        4 | 7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1d | 0x1e | 0x1f | 0x8000_001d
    )
}

/// The guest's CPUID table: Ferrite's model (`cpu::cpuid`) for every leaf it defines (vendor, signature,
/// brand, leaf limits), with each feature register ANDed with what KVM supports on this host, so the
/// guest is told about a feature only if Ferrite's platform has it *and* the host can run it. The
/// physical address width is the smaller of Ferrite's and the host's. KVM's own leaves (0x40000000,
/// kvmclock) and every host feature outside Ferrite's model are not advertised.
pub fn guest_cpuid(host: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    let host_reg = |leaf: u32, sub: u32| -> [u32; 4] {
        host.iter()
            .find(|e| {
                e.function == leaf && (e.index == sub || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
            })
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .unwrap_or([0; 4])
    };
    let max_basic = cpu::cpuid::cpuid(0, 0, 0)[0];
    let max_ext = cpu::cpuid::cpuid(0x8000_0000, 0, 0)[0];
    let mut out = Vec::new();
    for leaf in (0..=max_basic).chain(0x8000_0000..=max_ext) {
        let significant = index_significant(leaf);
        for sub in 0..if significant { 64 } else { 1 } {
            let mut r = cpu::cpuid::cpuid(leaf, sub, 0);
            if sub > 0 && r == [0; 4] {
                continue;
            }
            let h = host_reg(leaf, sub);
            match (leaf, sub) {
                (1, _) | (0x8000_0001, _) => {
                    r[2] &= h[2];
                    r[3] &= h[3];
                }
                (7, 0) => {
                    r[1] &= h[1];
                    r[2] &= h[2];
                    r[3] &= h[3];
                }
                // XSAVE: the state components (XCR0 bits) and the XSAVE variants both support.
                (0xd, 0) => {
                    r[0] &= h[0];
                    r[3] &= h[3];
                }
                (0xd, 1) => r[0] &= h[0],
                (0x8000_0008, _) => {
                    let host_bits = h[0] & 0xff;
                    if host_bits != 0 && host_bits < (r[0] & 0xff) {
                        r[0] = (r[0] & !0xff) | host_bits;
                    }
                }
                _ => {}
            }
            out.push(kvm_cpuid_entry2 {
                function: leaf,
                index: sub,
                flags: if significant { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 },
                eax: r[0],
                ebx: r[1],
                ecx: r[2],
                edx: r[3],
                padding: [0; 3],
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Host plumbing: anonymous mappings, raw ioctls, the slice timer.
// ---------------------------------------------------------------------------------------------------

/// `_IOW(KVMIO, nr, size)`.
const fn kvm_iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (0xae << 8) | nr
}
/// KVM_INTERRUPT (struct kvm_interrupt: one u32).
const KVM_INTERRUPT: u64 = kvm_iow(0x86, 4);
/// KVM_SET_SIGNAL_MASK (struct kvm_signal_mask: u32 len + the set).
const KVM_SET_SIGNAL_MASK: u64 = kvm_iow(0x8b, 4);

/// A page-aligned anonymous host mapping (ROM copies, the calibration guest's RAM).
struct AnonMap {
    ptr: *mut u8,
    len: usize,
}

impl AnonMap {
    fn new(len: usize) -> Result<AnonMap, String> {
        let len = len.div_ceil(4096).max(1) * 4096;
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory; the result
        // is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap of {len} bytes failed: {}", std::io::Error::last_os_error()));
        }
        Ok(AnonMap { ptr: p as *mut u8, len })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live read-write mapping of `len` bytes owned by `self`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; KVM slots that pointed into it were removed
        // (or the VM closed) before, see `KvmEngine`'s field order and `unmap_all`.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

extern "C" fn kick_handler(_: libc::c_int) {}

fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for a real-time signal Ferrite
        // owns; `sa` is fully initialised (zeroed, then the fields set).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = kick_handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Kicks the vCPU out of KVM_RUN at a host deadline: a POSIX timer sends [`kick_signal`] to the thread
/// that runs the vCPU. The signal is blocked in that thread except inside KVM_RUN (KVM_SET_SIGNAL_MASK),
/// so a signal that arrives just before KVM_RUN stays pending and makes it return at once: no lost
/// wake-ups, and no handler ever runs.
struct Kicker {
    timer: libc::timer_t,
    tid: i32,
}

impl Kicker {
    fn for_current_thread(vcpu: &VcpuFd) -> Result<Kicker, String> {
        install_kick_handler();
        let sig = kick_signal();
        let tid = current_tid();
        // SAFETY: sigset_t values are initialised with sigemptyset before use; pthread_sigmask only changes
        // this thread's mask; the KVM_SET_SIGNAL_MASK argument is a properly laid-out kvm_signal_mask
        // (u32 length 8 followed by the 8-byte kernel sigset) on the stack for the duration of the call;
        // timer_create writes the new timer id into `timer`.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, sig);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &block, std::ptr::null_mut()) != 0 {
                return Err("cannot block the vCPU kick signal".into());
            }
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut cur);
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            let mut kmask = 0u64;
            for s in 1..=64 {
                if s != sig && libc::sigismember(&cur, s) == 1 {
                    kmask |= 1 << (s - 1);
                }
            }
            #[repr(C)]
            struct SignalMask {
                len: u32,
                mask: u64,
            }
            let arg = SignalMask { len: 8, mask: kmask };
            if libc::ioctl(vcpu.as_raw_fd(), KVM_SET_SIGNAL_MASK as _, &arg) != 0 {
                return Err(format!("KVM_SET_SIGNAL_MASK failed: {}", std::io::Error::last_os_error()));
            }
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = sig;
            sev.sigev_notify_thread_id = tid;
            let mut timer: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                return Err(format!("timer_create failed: {}", std::io::Error::last_os_error()));
            }
            Ok(Kicker { timer, tid })
        }
    }

    /// Fires once after `after` (at least 1 µs), or never for `None`.
    fn arm(&self, after: Option<Duration>) {
        let value = match after {
            Some(d) => {
                let d = d.max(Duration::from_micros(1));
                libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                }
            }
            None => libc::timespec { tv_sec: 0, tv_nsec: 0 },
        };
        let its = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: `timer` is a live timer created by timer_create and owned by `self`.
        unsafe {
            libc::timer_settime(self.timer, 0, &its, std::ptr::null_mut());
        }
    }

    /// Consumes pending kick signals (they are blocked outside KVM_RUN, so they stay pending).
    fn eat(&self) {
        // SAFETY: the set is initialised by sigemptyset; sigtimedwait with a zero timeout never blocks.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kick_signal());
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) > 0 {}
        }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this Kicker created; it is not used afterwards.
        unsafe {
            libc::timer_delete(self.timer);
        }
        self.eat();
    }
}

fn kvm_interrupt(vcpu: &VcpuFd, vector: u8) -> Result<(), String> {
    let irq: u32 = vector as u32;
    // SAFETY: KVM_INTERRUPT reads one struct kvm_interrupt (a u32) from the pointer, which is live.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
    if r != 0 {
        return Err(format!("KVM_INTERRUPT({vector:#x}) failed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn open_kvm() -> Result<Kvm, String> {
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    if kvm.get_api_version() < 0 {
        return Err("/dev/kvm is not a KVM device (KVM_GET_API_VERSION failed)".into());
    }
    if kvm.get_api_version() != 12 {
        return Err(format!("/dev/kvm speaks KVM API version {}, not 12", kvm.get_api_version()));
    }
    Ok(kvm)
}

// ---------------------------------------------------------------------------------------------------
// The engine.
// ---------------------------------------------------------------------------------------------------

/// A KVM memory slot Ferrite created.
struct Slot {
    slot: u32,
    gpa: u64,
    size: u64,
    flags: u32,
    host: u64,
}

/// A KVM virtual machine with one vCPU.
pub struct KvmEngine {
    // Field order matters: the vCPU and VM close (dropping every slot) before the ROM copies unmap.
    kicker: Option<Kicker>,
    vcpu: VcpuFd,
    vm: VmFd,
    _kvm: Kvm,
    rom_copies: Vec<AnonMap>,
    slots: Vec<Slot>,
    /// The address map and RAM the slots were built from.
    mapped: Vec<Region>,
    mapped_ram: (usize, u64),
    run_size: usize,
    readonly_mem: bool,
    has_events: bool,
    has_debugregs: bool,
    has_xcrs: bool,
    /// MSRs KVM refused (skipped from then on).
    bad_msrs: Vec<u32>,
    /// The state as last exported to `CpuState`, converted back: when `CpuState` still converts to it at
    /// the next entry, KVM already holds that state (and more) and nothing is written.
    exported: Option<KvmState>,
    /// `ready_for_interrupt_injection` in kvm_run describes the current state (false after we set it).
    ready_valid: bool,
    /// The last exit was port I/O or MMIO: KVM completes the instruction at the next KVM_RUN.
    needs_completion: bool,
    tsc_set: bool,
}

/// Outcome of one KVM exit, decoded.
enum Ev {
    Continue,
    Done(Exit),
}

impl KvmEngine {
    /// Opens /dev/kvm and creates the VM for `board`'s memory map. The engine maps the board's RAM:
    /// it must be dropped before the board (as [`crate::Machine`]'s field order guarantees).
    pub fn new(board: &Board) -> Result<KvmEngine, String> {
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
        // Real mode on VT-x without unrestricted guest needs these; harmless elsewhere. They sit just
        // below the largest firmware window (4 GiB - 16 MiB), outside RAM.
        let _ = vm.set_identity_map_address(0xfeff_c000);
        let _ = vm.set_tss_address(0xfeff_d000);
        if vm.check_extension(Cap::X86UserSpaceMsr) {
            // MSRs KVM does not know (x2APIC registers without an in-kernel APIC, TSC deadline) exit to
            // userspace and go to the board.
            let cap = kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
                args: [(KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN) as u64, 0, 0, 0],
                ..Default::default()
            };
            let _ = vm.enable_cap(&cap);
        }
        let vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
        let host = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID failed: {e}"))?;
        let table = guest_cpuid(host.as_slice());
        let cpuid = CpuId::from_entries(&table).map_err(|e| format!("CPUID table: {e:?}"))?;
        vcpu.set_cpuid2(&cpuid).map_err(|e| format!("KVM_SET_CPUID2 failed: {e}"))?;
        let mut e = KvmEngine {
            kicker: None,
            run_size: vm.run_size(),
            readonly_mem: vm.check_extension(Cap::ReadonlyMem),
            has_events: vm.check_extension(Cap::VcpuEvents),
            has_debugregs: vm.check_extension(Cap::Debugregs),
            has_xcrs: vm.check_extension(Cap::Xcrs),
            vcpu,
            vm,
            _kvm: kvm,
            rom_copies: Vec::new(),
            slots: Vec::new(),
            mapped: Vec::new(),
            mapped_ram: (0, 0),
            bad_msrs: Vec::new(),
            exported: None,
            ready_valid: false,
            needs_completion: false,
            tsc_set: false,
        };
        e.sync_memory(board)?;
        Ok(e)
    }

    fn set_slot(&self, s: &Slot, size: u64) -> Result<(), String> {
        let r = kvm_userspace_memory_region {
            slot: s.slot,
            flags: s.flags,
            guest_phys_addr: s.gpa,
            memory_size: size,
            userspace_addr: s.host,
        };
        // SAFETY: `host..host+size` is either the board's RAM mapping (which outlives the engine: the
        // machine drops the engine first, and `sync_memory` re-registers if the board's RAM changes) or
        // one of `rom_copies`, which live until the slots are removed or the VM is closed. A size of 0
        // deletes the slot.
        unsafe { self.vm.set_user_memory_region(r) }.map_err(|e| {
            format!("KVM_SET_USER_MEMORY_REGION(slot {} at {:#x}+{:#x}): {e}", s.slot, s.gpa, size)
        })
    }

    /// Makes KVM's memory slots match the board's address map (called at every entry; cheap when
    /// nothing changed).
    fn sync_memory(&mut self, board: &Board) -> Result<(), String> {
        let ram = (board.ram.as_ptr() as usize, board.ram.len());
        if self.mapped == board.map.regions() && self.mapped_ram == ram {
            return Ok(());
        }
        for s in std::mem::take(&mut self.slots) {
            self.set_slot(&s, 0)?;
        }
        self.rom_copies.clear();
        let mut slots = Vec::new();
        for r in board.map.regions() {
            // Slots are whole pages; a partial page at either end stays unmapped (it exits as MMIO and
            // the board serves it).
            let start = r.start.next_multiple_of(4096);
            let end = r.end() & !0xfff;
            if end <= start {
                continue;
            }
            let (host, flags) = match r.kind {
                RegionKind::Ram { offset } => {
                    let off = offset + (start - r.start);
                    if off + (end - start) > ram.1 {
                        return Err(format!(
                            "RAM region {:#x}+{:#x} lies outside guest RAM",
                            r.start, r.size
                        ));
                    }
                    (ram.0 as u64 + off, 0)
                }
                RegionKind::Rom { rom, offset } => {
                    let Some(img) = board.map.rom_image(rom) else { continue };
                    let mut copy = AnonMap::new((end - start) as usize)?;
                    let buf = copy.as_mut_slice();
                    buf.fill(0xff);
                    let src = (offset + (start - r.start)) as usize;
                    if src < img.len() {
                        let n = (img.len() - src).min((end - start) as usize);
                        buf[..n].copy_from_slice(&img[src..src + n]);
                    }
                    let host = copy.ptr as u64;
                    self.rom_copies.push(copy);
                    (host, if self.readonly_mem { KVM_MEM_READONLY } else { 0 })
                }
                RegionKind::Mmio { .. } => continue,
            };
            slots.push(Slot { slot: slots.len() as u32, gpa: start, size: end - start, flags, host });
        }
        for s in &slots {
            self.set_slot(s, s.size)?;
        }
        self.slots = slots;
        self.mapped = board.map.regions().to_vec();
        self.mapped_ram = ram;
        Ok(())
    }

    /// Writes `cpu` into the vCPU (only the parts that changed since the last export).
    fn load_state(&mut self, cpu: &CpuState, board: &mut Board) -> Result<(), String> {
        let want = KvmState::from_cpu(cpu);
        let prev = self.exported.take();
        let changed = |f: &dyn Fn(&KvmState) -> bool| prev.as_ref().is_none_or(|p| !f(p));
        if changed(&|p| p.regs == want.regs) {
            self.vcpu.set_regs(&want.regs).map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
            self.ready_valid = false;
        }
        if changed(&|p| p.sregs == want.sregs) {
            self.vcpu.set_sregs(&want.sregs).map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
            self.ready_valid = false;
        }
        if changed(&|p| p.fpu == want.fpu) {
            self.vcpu.set_fpu(&want.fpu).map_err(|e| format!("KVM_SET_FPU failed: {e}"))?;
        }
        if changed(&|p| p.msrs == want.msrs) {
            let mut entries = want.msrs.clone();
            if !self.tsc_set {
                // Start the guest's TSC at the machine's TSC (it then runs at the host TSC's rate).
                entries.push(kvm_msr_entry {
                    index: MSR_TSC,
                    reserved: 0,
                    data: board.tsc(cpu.icount).wrapping_add(cpu.msr.tsc_offset),
                });
                self.tsc_set = true;
            }
            self.set_msrs(&entries)?;
        }
        if self.has_debugregs && changed(&|p| p.debugregs == want.debugregs) {
            self.vcpu
                .set_debug_regs(&want.debugregs)
                .map_err(|e| format!("KVM_SET_DEBUGREGS failed: {e}"))?;
        }
        if self.has_xcrs && changed(&|p| p.xcr0 == want.xcr0) {
            let mut x = kvm_bindings::kvm_xcrs { nr_xcrs: 1, ..Default::default() };
            x.xcrs[0].xcr = 0;
            x.xcrs[0].value = want.xcr0;
            // Refused when the host has no XSAVE (then the guest cannot have changed XCR0 either).
            let _ = self.vcpu.set_xcrs(&x);
        }
        if self.has_events && changed(&|p| p.shadow == want.shadow && p.nmi_masked == want.nmi_masked) {
            let mut ev =
                self.vcpu.get_vcpu_events().map_err(|e| format!("KVM_GET_VCPU_EVENTS failed: {e}"))?;
            // Keep KVM's queued events (an injected interrupt not yet delivered); set the shadow and the
            // NMI mask from CpuState.
            ev.interrupt.shadow = want.shadow;
            ev.nmi.masked = u8::from(want.nmi_masked);
            ev.flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING;
            self.vcpu.set_vcpu_events(&ev).map_err(|e| format!("KVM_SET_VCPU_EVENTS failed: {e}"))?;
            self.ready_valid = false;
        }
        Ok(())
    }

    /// KVM_SET_MSRS, skipping (and remembering) MSRs KVM refuses.
    fn set_msrs(&mut self, entries: &[kvm_msr_entry]) -> Result<(), String> {
        let mut list: Vec<kvm_msr_entry> =
            entries.iter().filter(|e| !self.bad_msrs.contains(&e.index)).copied().collect();
        while !list.is_empty() {
            let msrs = kvm_bindings::Msrs::from_entries(&list).map_err(|e| format!("MSR list: {e:?}"))?;
            let n = self.vcpu.set_msrs(&msrs).map_err(|e| format!("KVM_SET_MSRS failed: {e}"))?;
            if n >= list.len() {
                break;
            }
            self.bad_msrs.push(list[n].index);
            list.drain(..=n);
        }
        Ok(())
    }

    /// KVM_GET_MSRS for `wanted`, skipping (and remembering) MSRs KVM refuses.
    fn get_msrs(&mut self, wanted: &[kvm_msr_entry]) -> Result<Vec<kvm_msr_entry>, String> {
        let mut out = Vec::new();
        let mut list: Vec<kvm_msr_entry> =
            wanted.iter().filter(|e| !self.bad_msrs.contains(&e.index)).copied().collect();
        while !list.is_empty() {
            let mut msrs = kvm_bindings::Msrs::from_entries(&list).map_err(|e| format!("MSR list: {e:?}"))?;
            let n = self.vcpu.get_msrs(&mut msrs).map_err(|e| format!("KVM_GET_MSRS failed: {e}"))?;
            out.extend_from_slice(&msrs.as_slice()[..n.min(list.len())]);
            if n >= list.len() {
                break;
            }
            self.bad_msrs.push(list[n].index);
            list.drain(..=n);
        }
        Ok(out)
    }

    /// Reads the vCPU into `cpu` and remembers what was exported.
    fn save_state(&mut self, cpu: &mut CpuState, board: &mut Board) -> Result<(), String> {
        let mut st = KvmState::from_cpu(cpu);
        st.regs = self.vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS failed: {e}"))?;
        st.sregs = self.vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
        st.fpu = self.vcpu.get_fpu().map_err(|e| format!("KVM_GET_FPU failed: {e}"))?;
        st.msrs = self.get_msrs(&st.msrs)?;
        if self.has_debugregs {
            st.debugregs =
                self.vcpu.get_debug_regs().map_err(|e| format!("KVM_GET_DEBUGREGS failed: {e}"))?;
        }
        if self.has_events {
            let ev = self.vcpu.get_vcpu_events().map_err(|e| format!("KVM_GET_VCPU_EVENTS failed: {e}"))?;
            st.shadow = ev.interrupt.shadow;
            st.nmi_masked = ev.nmi.masked != 0;
        }
        if self.has_xcrs
            && let Ok(x) = self.vcpu.get_xcrs()
            && let Some(v) = x.xcrs[..(x.nr_xcrs as usize).min(16)].iter().find(|e| e.xcr == 0)
        {
            st.xcr0 = v.value;
        }
        let old_apic_base = cpu.msr.apic_base;
        st.apply_to(cpu);
        if cpu.msr.apic_base != old_apic_base {
            // KVM absorbed a WRMSR to IA32_APIC_BASE: tell the board's local APIC.
            board.write_msr(MSR_APIC_BASE, cpu.msr.apic_base);
        }
        self.exported = Some(KvmState::from_cpu(cpu));
        Ok(())
    }

    /// Runs the vCPU until `cpu.icount` would pass `until` (KVM has no instruction counter: under KVM the
    /// machine's clock is host time and `until` a host deadline, see [`crate::clock`]) or an exit needs
    /// the machine.
    pub fn run(&mut self, cpu: &mut CpuState, board: &mut Board, until: u64) -> Exit {
        match self.run_inner(cpu, board, until) {
            Ok(e) => e,
            Err(msg) => {
                // Leave CpuState as current as possible for the register dump.
                let _ = self.save_state(cpu, board);
                Exit::Stopped(Stop::Shutdown(msg))
            }
        }
    }

    fn run_inner(&mut self, cpu: &mut CpuState, board: &mut Board, until: u64) -> Result<Exit, String> {
        self.sync_memory(board)?;
        let tid = current_tid();
        if self.kicker.as_ref().is_none_or(|k| k.tid != tid) {
            self.kicker = None;
            self.kicker = Some(Kicker::for_current_thread(&self.vcpu)?);
        }
        self.load_state(cpu, board)?;
        let host_time = board.clock.is_host();
        let deadline = board.clock.host_deadline(until);
        if let Some(k) = &self.kicker {
            k.arm(deadline.map(|d| d.saturating_duration_since(Instant::now())));
        }
        let result = self.exit_loop(cpu, board, until, host_time);
        if let Some(k) = &self.kicker {
            k.arm(None);
            k.eat();
        }
        let exit = result?;
        self.complete_pending(board)?;
        self.save_state(cpu, board)?;
        Ok(exit)
    }

    /// Re-enters KVM with `immediate_exit` so a pending port/MMIO instruction completes (KVM finishes it
    /// at the next KVM_RUN) without running further guest code.
    fn complete_pending(&mut self, board: &mut Board) -> Result<(), String> {
        for _ in 0..100_000 {
            if !self.needs_completion {
                return Ok(());
            }
            self.needs_completion = false;
            self.vcpu.set_kvm_immediate_exit(1);
            let r = self.vcpu.run();
            let ev = match r {
                Err(e) if e.errno() == libc::EINTR => Ok(Ev::Continue),
                Err(e) => Err(format!("KVM_RUN (completing I/O) failed: {e}")),
                Ok(exit) => Self::io_exit(exit, board, &mut self.needs_completion),
            };
            self.vcpu.set_kvm_immediate_exit(0);
            ev?;
        }
        Err("a string I/O instruction did not complete".into())
    }

    /// Handles port and MMIO exits (returns `Ev::Done` with a stop for anything else, so the caller only
    /// passes those here).
    fn io_exit(exit: VcpuExit<'_>, board: &mut Board, needs_completion: &mut bool) -> Result<Ev, String> {
        match exit {
            VcpuExit::MmioRead(addr, data) => {
                board.read_phys(addr, data);
                *needs_completion = true;
            }
            VcpuExit::MmioWrite(addr, data) => {
                board.write_phys(addr, data);
                *needs_completion = true;
            }
            VcpuExit::IoIn(..) | VcpuExit::IoOut(..) => {
                // Handled by the caller from kvm_run (it needs the access size).
                return Err("internal: port exit routed to io_exit".into());
            }
            other => return Err(format!("unexpected KVM exit {other:?} while completing I/O")),
        }
        Ok(Ev::Continue)
    }

    /// The port I/O exit in kvm_run: `count` accesses of `size` bytes at `port`.
    fn port_exit(&mut self, board: &mut Board) -> Result<(), String> {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called only right after KVM_RUN returned KVM_EXIT_IO, so `io` is the active member of
        // the exit union.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = io.size as usize;
        let total = size * io.count as usize;
        if !(1..=4).contains(&size) || io.data_offset as usize + total > self.run_size {
            return Err(format!(
                "malformed KVM_EXIT_IO: port {:#x} size {} count {}",
                io.port, io.size, io.count
            ));
        }
        // SAFETY: kvm_run is the start of the vCPU's mapping of `run_size` bytes, and the data area lies
        // within it (checked above); nothing else aliases it while the vCPU is not running.
        let data = unsafe {
            std::slice::from_raw_parts_mut((run as *mut _ as *mut u8).add(io.data_offset as usize), total)
        };
        for chunk in data.chunks_mut(size) {
            if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN {
                let v = board.io_in(io.port, size as u8);
                chunk.copy_from_slice(&v.to_le_bytes()[..size]);
            } else {
                let mut b = [0u8; 4];
                b[..size].copy_from_slice(chunk);
                board.io_out(io.port, size as u8, u32::from_le_bytes(b));
            }
        }
        self.needs_completion = true;
        Ok(())
    }

    /// Injects what the board has for the CPU, if the vCPU can take it; otherwise asks KVM for an exit
    /// when it can. Returns true if the CPU was woken from HLT.
    fn inject(&mut self, cpu: &mut CpuState, board: &mut Board) -> Result<(), String> {
        if board.nmi_pending() {
            board.take_nmi();
            self.vcpu.nmi().map_err(|e| format!("KVM_NMI failed: {e}"))?;
            cpu.halted = false;
        }
        let pending = board.interrupt_pending();
        let run = self.vcpu.get_kvm_run();
        if !pending {
            run.request_interrupt_window = 0;
            return Ok(());
        }
        // While halted the vCPU state is the one exported at the HLT exit: IF decides (no shadow after
        // HLT). Otherwise KVM's own verdict from the last exit.
        let can = if cpu.halted {
            cpu.rflags & flags::IF != 0 && !(self.ready_valid && run.ready_for_interrupt_injection == 0)
        } else {
            self.ready_valid && run.ready_for_interrupt_injection != 0
        };
        if can {
            if let Some(v) = board.acknowledge_interrupt() {
                kvm_interrupt(&self.vcpu, v)?;
                cpu.halted = false;
                self.ready_valid = false;
            }
            let run = self.vcpu.get_kvm_run();
            run.request_interrupt_window = u8::from(board.interrupt_pending());
        } else {
            run.request_interrupt_window = u8::from(!cpu.halted || cpu.rflags & flags::IF != 0);
        }
        Ok(())
    }

    fn exit_loop(
        &mut self,
        cpu: &mut CpuState,
        board: &mut Board,
        until: u64,
        host_time: bool,
    ) -> Result<Exit, String> {
        let mut exits_without_time = 0u64;
        loop {
            if host_time {
                cpu.icount = board.clock.icount_now(cpu.icount);
            } else {
                // Without a host clock the engine counts exits as "instructions" (not used by the machine).
                cpu.icount += 1;
            }
            board.sync(cpu.icount);
            if cpu.icount >= until {
                return Ok(Exit::BudgetSpent);
            }
            if board.stop_requested() {
                return Ok(Exit::DeviceRequest);
            }
            self.inject(cpu, board)?;
            if cpu.halted {
                return Ok(Exit::Halted);
            }
            let r = self.vcpu.run();
            self.needs_completion = false;
            self.ready_valid = true;
            let mut port = false;
            let ev = match r {
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if let Some(k) = &self.kicker {
                        k.eat();
                    }
                    Ev::Continue
                }
                Err(e) => return Err(format!("KVM_RUN failed: {e}")),
                Ok(VcpuExit::IoIn(..)) | Ok(VcpuExit::IoOut(..)) => {
                    port = true;
                    Ev::Continue
                }
                Ok(e @ (VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..))) => {
                    Self::io_exit(e, board, &mut self.needs_completion)?
                }
                Ok(VcpuExit::Hlt) => {
                    cpu.halted = true;
                    Ev::Continue
                }
                Ok(VcpuExit::IrqWindowOpen) => Ev::Continue,
                Ok(VcpuExit::Shutdown) => Ev::Done(Exit::Stopped(Stop::TripleFault)),
                Ok(VcpuExit::X86Rdmsr(m)) => {
                    match board.read_msr(m.index) {
                        Some(v) => *m.data = v,
                        None => *m.error = 1,
                    }
                    Ev::Continue
                }
                Ok(VcpuExit::X86Wrmsr(m)) => {
                    if !board.write_msr(m.index, m.data) {
                        *m.error = 1;
                    }
                    Ev::Continue
                }
                Ok(VcpuExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_RESET => {
                    board.requests.reset = true;
                    Ev::Done(Exit::DeviceRequest)
                }
                Ok(VcpuExit::SystemEvent(kind, _)) if kind == KVM_SYSTEM_EVENT_SHUTDOWN => {
                    Ev::Done(Exit::Stopped(Stop::Shutdown("KVM_EXIT_SYSTEM_EVENT: shutdown".into())))
                }
                Ok(VcpuExit::InternalError) => {
                    let msg = self.internal_error(board);
                    return Err(msg);
                }
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    return Err(format!(
                        "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} at {}",
                        self.where_now(board)
                    ));
                }
                Ok(other) => {
                    let what = format!("{other:?}");
                    return Err(format!("unexpected KVM exit {what} at {}", self.where_now(board)));
                }
            };
            if port {
                self.port_exit(board)?;
            }
            if let Ev::Done(e) = ev {
                return Ok(e);
            }
            // Guard (without a host clock) against exits that never end.
            exits_without_time += 1;
            if !host_time && exits_without_time > 100_000_000 {
                return Ok(Exit::BudgetSpent);
            }
        }
    }

    /// `cs:rip (linear ...)` of the vCPU now, for messages.
    fn where_now(&mut self, board: &mut Board) -> String {
        self.location(board).0
    }

    /// The vCPU's location and the bytes of the instruction there (if they can be read).
    fn location(&mut self, board: &mut Board) -> (String, Vec<u8>, u32) {
        let (Ok(regs), Ok(sregs)) = (self.vcpu.get_regs(), self.vcpu.get_sregs()) else {
            return ("an unknown RIP".into(), Vec::new(), 64);
        };
        let bits = if sregs.cr0 & cr0::PE == 0 || regs.rflags & flags::VM != 0 {
            16
        } else if sregs.efer & cpu::state::efer::LMA != 0 && sregs.cs.l != 0 {
            64
        } else if sregs.cs.db != 0 {
            32
        } else {
            16
        };
        let lin = if bits == 64 { regs.rip } else { sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff };
        let mut bytes = Vec::new();
        let phys = if sregs.cr0 & cr0::PG != 0 {
            self.vcpu.translate_gva(lin).ok().filter(|t| t.valid != 0).map(|t| t.physical_address)
        } else {
            Some(lin)
        };
        if let Some(p) = phys {
            let n = (0x1000 - (p & 0xfff)).min(15) as usize;
            let mut b = vec![0u8; n];
            board.read_phys(p, &mut b);
            bytes = b;
        }
        (format!("cs:rip {:04x}:{:x} (linear {lin:#x})", sregs.cs.selector, regs.rip), bytes, bits)
    }

    /// A one-line description of KVM_EXIT_INTERNAL_ERROR: suberror, RIP, the instruction.
    fn internal_error(&mut self, board: &mut Board) -> String {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
        // member of the exit union.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let sub = internal.suberror;
        let what = match sub {
            kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
            kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
            kvm_bindings::KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected hardware exit",
            _ => "unknown",
        };
        let (loc, mut bytes, bits) = self.location(board);
        // KVM's own copy of the instruction bytes, when it provides them (emulation failures).
        if sub == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION
            && internal.ndata >= 3
            && internal.data[0] & u64::from(kvm_bindings::KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)
                != 0
        {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&internal.data[1].to_le_bytes());
            raw[8..].copy_from_slice(&internal.data[2].to_le_bytes());
            let n = (raw[0] as usize).min(15);
            if n > 0 {
                bytes = raw[1..1 + n].to_vec();
            }
        }
        let insn = describe_insn(&bytes, bits);
        format!("KVM_EXIT_INTERNAL_ERROR suberror {sub} ({what}) at {loc}: {insn}")
    }
}

/// "mnemonic [bytes]" for the instruction at the start of `bytes`.
fn describe_insn(bytes: &[u8], bits: u32) -> String {
    if bytes.is_empty() {
        return "instruction bytes unavailable".into();
    }
    let mut d = iced_x86::Decoder::new(bits, bytes, iced_x86::DecoderOptions::NONE);
    let i = d.decode();
    let len = if i.is_invalid() { bytes.len().min(8) } else { i.len() };
    let hex: Vec<String> = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
    let mut f = iced_x86::IntelFormatter::new();
    let mut text = String::new();
    use iced_x86::Formatter;
    f.format(&i, &mut text);
    format!("{text} [{}]", hex.join(" "))
}

// ---------------------------------------------------------------------------------------------------
// Probing: is /dev/kvm usable, and does it run guests on hardware?
// ---------------------------------------------------------------------------------------------------

/// What [`probe`] found out about /dev/kvm.
#[derive(Clone, Debug)]
pub struct KvmProbe {
    /// Guest speed in a tight loop, in millions of instructions per second.
    pub mips: f64,
    /// Why KVM is emulated rather than hardware-assisted (`None`: it runs guests on hardware).
    pub emulated: Option<String>,
}

impl KvmProbe {
    /// Whether KVM runs guests on hardware (worth using instead of the interpreter).
    pub fn hardware(&self) -> bool {
        self.emulated.is_none()
    }
}

/// Below this calibration speed KVM is taken to be emulated.
const HARDWARE_MIPS: f64 = 50.0;

/// Checks that /dev/kvm can run a guest and measures how fast: a real-mode `dec ecx; jnz` loop runs
/// for about 20 ms. KVM is "emulated" when the PVM module (`kvm_pvm`) is loaded or the loop runs below
/// 50 MIPS (hardware does hundreds to thousands).
pub fn probe() -> Result<KvmProbe, String> {
    // Declared first so it is dropped last, after the VM that maps it.
    let mut mem = AnonMap::new(0x1000)?;
    let kvm = open_kvm()?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let _ = vm.set_identity_map_address(0xfeff_c000);
    let _ = vm.set_tss_address(0xfeff_d000);
    // mov ecx, 0x7fffffff; l: dec ecx; jnz l; hlt
    let code = [0x66, 0xb9, 0xff, 0xff, 0xff, 0x7f, 0x66, 0x49, 0x75, 0xfc, 0xf4];
    mem.as_mut_slice()[..code.len()].copy_from_slice(&code);
    let slot = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.len as u64,
        userspace_addr: mem.ptr as u64,
    };
    // SAFETY: `mem` is a live anonymous mapping of `memory_size` bytes; it is declared before `vm` and so
    // outlives it on every path (locals drop in reverse order).
    unsafe { vm.set_user_memory_region(slot) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_regs { rip: 0, rflags: 2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    let kicker = Kicker::for_current_thread(&vcpu)?;
    let start = Instant::now();
    kicker.arm(Some(Duration::from_millis(20)));
    let outcome = loop {
        match vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => break Ok(()),
            Err(e) => break Err(format!("KVM_RUN failed: {e}")),
            Ok(VcpuExit::Hlt) => break Ok(()),
            Ok(VcpuExit::InternalError) => {
                break Err("KVM_EXIT_INTERNAL_ERROR in the calibration loop".into());
            }
            Ok(other) => {
                let s = format!("{other:?}");
                if start.elapsed() > Duration::from_secs(2) {
                    break Err(format!("unexpected KVM exit {s} in the calibration loop"));
                }
            }
        }
    };
    let elapsed = start.elapsed();
    kicker.arm(None);
    drop(kicker);
    outcome?;
    let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS failed: {e}"))?;
    let iterations = 0x7fff_ffffu64 - (regs.rcx & 0xffff_ffff);
    let mips = (2 * iterations + 1) as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6;
    let emulated = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        Some(format!(
            "/dev/kvm is PVM (kvm_pvm loaded), which emulates ordinary guests in software ({mips:.1} MIPS in a calibration loop)"
        ))
    } else if mips < HARDWARE_MIPS {
        Some(format!("/dev/kvm runs guests at {mips:.1} MIPS in a calibration loop: software emulation"))
    } else {
        None
    };
    Ok(KvmProbe { mips, emulated })
}

/// KVM as the machine's engine: guest memory is shared with KVM (DMA writes need no invalidation, and
/// there are no translations to flush).
impl Engine for KvmEngine {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn run(&mut self, cpu: &mut CpuState, board: &mut Board, until: u64) -> Exit {
        KvmEngine::run(self, cpu, board, until)
    }

    fn flush_all(&mut self) {}

    fn invalidate_code(&mut self, _ranges: &[std::ops::Range<u64>]) {}
}

#[cfg(test)]
mod tests {
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
        c.xcr0 = 3;
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
}
