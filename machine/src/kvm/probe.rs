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
