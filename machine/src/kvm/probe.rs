//! Whether /dev/kvm runs guests on hardware: a calibration loop and the `kvm_pvm` module check, for
//! `--accel auto`.

use super::*;

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
pub(super) const HARDWARE_MIPS: f64 = 50.0;

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

/// What KVM_SET_GUEST_DEBUG does on this host, one debugging facility.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestDebug {
    /// The ioctl was accepted and the vCPU stopped where the facility says it must.
    Works,
    /// The host refused the ioctl (or KVM_RUN with it set): the reason, in one line.
    Refused(String),
    /// The host accepted the ioctl but ignores it: the guest took the event itself (PVM does this with
    /// INT3 under `KVM_GUESTDBG_USE_SW_BP`), in one line.
    Ignored(String),
    /// The ioctl was accepted but the vCPU did not stop where it must: what happened instead.
    Wrong(String),
}

/// [`probe_guest_debug`]'s findings: the four facilities a debugger needs from KVM.
#[derive(Clone, Debug)]
pub struct GuestDebugSupport {
    /// Single-step (`KVM_GUESTDBG_SINGLESTEP`): one instruction per KVM_RUN.
    pub single_step: GuestDebug,
    /// A hardware execution breakpoint (`KVM_GUESTDBG_USE_HW_BP`, DR0 and DR7 through the debug struct).
    pub hw_breakpoint: GuestDebug,
    /// A software breakpoint (`KVM_GUESTDBG_USE_SW_BP`: the guest's INT3 exits to the host).
    pub sw_breakpoint: GuestDebug,
    /// A hardware data breakpoint (`KVM_GUESTDBG_USE_HW_BP`, DR0 watching a byte for writes): the vCPU
    /// stops after the store. PVM, which emulates real-mode guests instruction by instruction, ignores
    /// it.
    pub hw_watchpoint: GuestDebug,
}

/// Runs a five-byte real-mode guest (`nop; inc ax; nop; int3; hlt` at address 0, its INT3 vector
/// pointing at a `hlt` at 0x20, and `mov [0x40], al; hlt` at 0x10) under
/// KVM_SET_GUEST_DEBUG to find out which of single-step, hardware and software breakpoints and data
/// breakpoints /dev/kvm supports (PVM, a software KVM, may refuse some). `Err` when /dev/kvm cannot run
/// a guest at all.
pub fn probe_guest_debug() -> Result<GuestDebugSupport, String> {
    use kvm_bindings::{
        KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
        kvm_guest_debug, kvm_guest_debug_arch,
    };
    // Declared first so it is dropped last, after the VM that maps it.
    let mut mem = AnonMap::new(0x1000)?;
    let kvm = open_kvm()?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let _ = vm.set_identity_map_address(0xfeff_c000);
    let _ = vm.set_tss_address(0xfeff_d000);
    let ram = mem.as_mut_slice();
    ram[..5].copy_from_slice(&[0x90, 0x40, 0x90, 0xcc, 0xf4]);
    // Vector 3 of the real-mode IVT (0000:0020) and its handler: a guest that takes its own INT3 halts
    // there.
    ram[12..16].copy_from_slice(&[0x20, 0, 0, 0]);
    ram[0x20] = 0xf4;
    ram[0x10..0x14].copy_from_slice(&[0xa2, 0x40, 0x00, 0xf4]);
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
    sregs.ss.base = 0;
    sregs.ss.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    // The guest never runs away: a kick after a second ends a KVM_RUN that does not stop.
    let kicker = Kicker::for_current_thread(&vcpu)?;
    // Sets RIP and the debug control, runs once, and says where the vCPU stopped.
    let mut attempt = |rip: u64, control: u32, dr0: u64, dr7: u64| -> Result<(u64, u64), GuestDebug> {
        let regs = kvm_regs { rip, rflags: 2, rsp: 0x800, ..Default::default() };
        vcpu.set_regs(&regs).map_err(|e| GuestDebug::Refused(format!("KVM_SET_REGS failed: {e}")))?;
        let mut arch = kvm_guest_debug_arch::default();
        arch.debugreg[0] = dr0;
        arch.debugreg[7] = dr7;
        let dbg = kvm_guest_debug { control, pad: 0, arch };
        vcpu.set_guest_debug(&dbg).map_err(|e| {
            GuestDebug::Refused(format!("KVM_SET_GUEST_DEBUG (control {control:#x}) failed: {e}"))
        })?;
        kicker.arm(Some(Duration::from_secs(1)));
        let exit = match vcpu.run() {
            Ok(VcpuExit::Debug(d)) => Ok(d.pc),
            Ok(VcpuExit::Hlt) if control & KVM_GUESTDBG_USE_SW_BP != 0 => Err(GuestDebug::Ignored(
                "the host accepts KVM_GUESTDBG_USE_SW_BP but delivers the guest's INT3 to the guest".into(),
            )),
            // Only the data breakpoint's attempt starts at 0x10 (a store, then HLT).
            Ok(VcpuExit::Hlt) if rip == 0x10 => Err(GuestDebug::Ignored(
                "the host accepts a data breakpoint in DR0 but the guest's write does not stop the vCPU"
                    .into(),
            )),
            Ok(other) => Err(GuestDebug::Wrong(format!("KVM_RUN exited with {other:?}, not a debug exit"))),
            Err(e) if e.errno() == libc::EINTR => {
                Err(GuestDebug::Wrong("KVM_RUN ran for a second without a debug exit".into()))
            }
            Err(e) => Err(GuestDebug::Refused(format!("KVM_RUN with guest debugging failed: {e}"))),
        };
        kicker.arm(None);
        let pc = exit?;
        let regs = vcpu.get_regs().map_err(|e| GuestDebug::Refused(format!("KVM_GET_REGS failed: {e}")))?;
        let _ = vcpu.set_guest_debug(&kvm_guest_debug::default());
        if regs.rip != pc {
            return Err(GuestDebug::Wrong(format!(
                "the debug exit reports pc {pc:#x} but RIP is {:#x}",
                regs.rip
            )));
        }
        Ok((regs.rip, regs.rax))
    };
    let verdict = |got: Result<(u64, u64), GuestDebug>, want_rip: u64, what: &str| match got {
        Ok((rip, _)) if rip == want_rip => GuestDebug::Works,
        Ok((rip, _)) => GuestDebug::Wrong(format!("{what} stopped at {rip:#x}, not {want_rip:#x}")),
        Err(e) => e,
    };
    // Single-step from `inc ax` (at 1): the vCPU stops before the `nop` at 2.
    let single_step =
        verdict(attempt(1, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, 0, 0), 2, "a single step");
    // DR0 = 2, DR7.L0 (execute, one byte): from 0 the vCPU stops before the instruction at 2.
    let hw_breakpoint = verdict(
        attempt(0, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, 2, 0x401),
        2,
        "a hardware breakpoint",
    );
    // INT3 at 3 exits to the host with RIP at the INT3.
    let sw_breakpoint = verdict(attempt(0, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, 0, 0), 3, "INT3");
    // DR0 = 0x40, DR7.L0 with R/W0 = 01 (writes), LEN0 = 00 (a byte): the store at 0x10 stops the vCPU
    // after it, at 0x13.
    let hw_watchpoint = verdict(
        attempt(0x10, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, 0x40, 0x1_0401),
        0x13,
        "a data breakpoint",
    );
    drop(kicker);
    Ok(GuestDebugSupport { single_step, hw_breakpoint, sw_breakpoint, hw_watchpoint })
}
