//! The vCPU: memory slots over the board's RAM, state in and out at every entry and exit, the exit loop
//! (port and MMIO exits to the board, interrupt injection, halts, the slice deadline).

use super::*;

pub(super) fn kvm_interrupt(vcpu: &VcpuFd, vector: u8) -> Result<(), String> {
    let irq: u32 = vector as u32;
    // SAFETY: KVM_INTERRUPT reads one struct kvm_interrupt (a u32) from the pointer, which is live.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
    if r != 0 {
        return Err(format!("KVM_INTERRUPT({vector:#x}) failed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A KVM memory slot Ferrite created.
pub(super) struct Slot {
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
    pub(super) vcpu: VcpuFd,
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
    /// KVM_GET/SET_XSAVE work (the YMM upper halves move through them).
    has_xsave: bool,
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
    /// What a debugger asks for (`debug.rs`).
    pub(super) debug_req: GuestDebugRequest,
    /// What KVM_SET_GUEST_DEBUG last gave KVM (`None`: never called).
    pub(super) debug_armed: Option<kvm_bindings::kvm_guest_debug>,
    /// The debugger's hit that ended the last run.
    pub(super) debug_hit: Option<DebugHit>,
}

/// Outcome of one KVM exit, decoded.
pub(super) enum Ev {
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
            has_xsave: vm.check_extension(Cap::Xsave),
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
            debug_req: GuestDebugRequest::default(),
            debug_armed: None,
            debug_hit: None,
        };
        e.sync_memory(board)?;
        Ok(e)
    }

    pub(super) fn set_slot(&self, s: &Slot, size: u64) -> Result<(), String> {
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
    pub(super) fn sync_memory(&mut self, board: &Board) -> Result<(), String> {
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
                RegionKind::Ram { offset } | RegionKind::RamReadOnly { offset } => {
                    let off = offset + (start - r.start);
                    if off + (end - start) > ram.1 {
                        return Err(format!(
                            "RAM region {:#x}+{:#x} lies outside guest RAM",
                            r.start, r.size
                        ));
                    }
                    // Write-protected shadow RAM: writes exit to the board, which drops them (without
                    // KVM's read-only slots they land, as on a chipset that ignores the PAM's WE bit).
                    let ro = matches!(r.kind, RegionKind::RamReadOnly { .. }) && self.readonly_mem;
                    (ram.0 as u64 + off, if ro { KVM_MEM_READONLY } else { 0 })
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
    pub(super) fn load_state(&mut self, cpu: &CpuState, board: &mut Board) -> Result<(), String> {
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
        // After KVM_SET_FPU (which rewrites the legacy area of the same image) and XCR0.
        if self.has_xsave && changed(&|p| p.ymm_hi == want.ymm_hi && p.fpu == want.fpu && p.pkru == want.pkru)
        {
            let mut x = self.vcpu.get_xsave().map_err(|e| format!("KVM_GET_XSAVE failed: {e}"))?;
            let pkru_differs = pkru_from_xsave(&x.region) != want.pkru;
            if ymm_hi_from_xsave(&x.region) != want.ymm_hi || pkru_differs {
                ymm_hi_into_xsave(&mut x.region, &want.ymm_hi);
                // PKRU only where it differs: a host without PKU has no component 9 in its image.
                if pkru_differs {
                    pkru_into_xsave(&mut x.region, want.pkru);
                }
                // SAFETY: `x` is the complete 4 KiB image KVM_GET_XSAVE just returned for this vCPU, with
                // only the AVX component (bytes 576..832), PKRU (bytes 2688..2696) and XSTATE_BV bits 2
                // and 9 changed; the components the
                // guest's XCR0 can enable (x87, SSE, AVX, PKRU at most: the models advertise no AMX)
                // all lie inside those 4 KiB, so the kernel reads nothing past the struct.
                unsafe { self.vcpu.set_xsave(&x) }.map_err(|e| format!("KVM_SET_XSAVE failed: {e}"))?;
            }
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
    pub(super) fn set_msrs(&mut self, entries: &[kvm_msr_entry]) -> Result<(), String> {
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
    pub(super) fn get_msrs(&mut self, wanted: &[kvm_msr_entry]) -> Result<Vec<kvm_msr_entry>, String> {
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
    pub(super) fn save_state(&mut self, cpu: &mut CpuState, board: &mut Board) -> Result<(), String> {
        let mut st = KvmState::from_cpu(cpu);
        st.regs = self.vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS failed: {e}"))?;
        st.sregs = self.vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
        st.fpu = self.vcpu.get_fpu().map_err(|e| format!("KVM_GET_FPU failed: {e}"))?;
        if self.has_xsave {
            let x = self.vcpu.get_xsave().map_err(|e| format!("KVM_GET_XSAVE failed: {e}"))?;
            st.ymm_hi = ymm_hi_from_xsave(&x.region);
            st.pkru = pkru_from_xsave(&x.region);
        }
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

    pub(super) fn run_inner(
        &mut self,
        cpu: &mut CpuState,
        board: &mut Board,
        until: u64,
    ) -> Result<Exit, String> {
        self.sync_memory(board)?;
        let tid = current_tid();
        if self.kicker.as_ref().is_none_or(|k| k.tid != tid) {
            self.kicker = None;
            self.kicker = Some(Kicker::for_current_thread(&self.vcpu)?);
        }
        self.load_state(cpu, board)?;
        self.debug_hit = None;
        self.arm_debug(cpu)?;
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
        // A debugger's step that ended while the last port or MMIO instruction completed.
        if self.debug_hit.is_some() {
            return Ok(Exit::ReachedStop);
        }
        Ok(exit)
    }

    /// Re-enters KVM with `immediate_exit` so a pending port/MMIO instruction completes (KVM finishes it
    /// at the next KVM_RUN) without running further guest code.
    pub(super) fn complete_pending(&mut self, board: &mut Board) -> Result<(), String> {
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
                // Single-stepping: completing the instruction ends the step (`debug_hit` is set).
                Ok(VcpuExit::Debug(arch)) => self.debug_exit(arch).map(|_| Ev::Continue),
                Ok(exit) => Self::io_exit(exit, board, &mut self.needs_completion),
            };
            self.vcpu.set_kvm_immediate_exit(0);
            ev?;
        }
        Err("a string I/O instruction did not complete".into())
    }

    /// Handles port and MMIO exits (returns `Ev::Done` with a stop for anything else, so the caller only
    /// passes those here).
    pub(super) fn io_exit(
        exit: VcpuExit<'_>,
        board: &mut Board,
        needs_completion: &mut bool,
    ) -> Result<Ev, String> {
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
    pub(super) fn port_exit(&mut self, board: &mut Board) -> Result<(), String> {
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
    pub(super) fn inject(&mut self, cpu: &mut CpuState, board: &mut Board) -> Result<(), String> {
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

    pub(super) fn exit_loop(
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
                Ok(VcpuExit::Debug(arch)) => self.debug_exit(arch)?,
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
            if self.needs_completion && self.debug_req.single_step {
                return self.step_through_io(board);
            }
            // Guard (without a host clock) against exits that never end.
            exits_without_time += 1;
            if !host_time && exits_without_time > 100_000_000 {
                return Ok(Exit::BudgetSpent);
            }
        }
    }

    /// `cs:rip (linear ...)` of the vCPU now, for messages.
    pub(super) fn where_now(&mut self, board: &mut Board) -> String {
        self.location(board).0
    }

    /// The vCPU's location and the bytes of the instruction there (if they can be read).
    pub(super) fn location(&mut self, board: &mut Board) -> (String, Vec<u8>, u32) {
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
    pub(super) fn internal_error(&mut self, board: &mut Board) -> String {
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
pub(super) fn describe_insn(bytes: &[u8], bits: u32) -> String {
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

    fn kvm_mut(&mut self) -> Option<&mut KvmEngine> {
        Some(self)
    }
}
