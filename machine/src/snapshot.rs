//! Whole-machine save and restore, and the state hash.
//!
//! A snapshot is the CPU's architectural state, the clock (instruction rate and idle slots), the board
//! (its requests, the interrupt controllers and lines, every registered device, fw_cfg, the PCI bus with
//! every function's configuration space and state), the engine's hidden state (the interpreter's TLB,
//! which may hold stale translations a guest relies on until it invalidates them, and which pages hold
//! code) and guest RAM, in the `vmcore::snapshot` byte format.
//! It restores into a machine built from the same configuration (same memory size, firmware and
//! devices, in the same order; interp and jit snapshots are interchangeable); the decoded blocks and JIT
//! code are dropped and the BAR windows remapped. Host-side things are not state: output sinks, the
//! input channel, decoded blocks and translations.
//!
//! [`Machine::state_hash`] hashes exactly what a snapshot holds (RAM in place, without copying it): two
//! runs of the same guest that reach the same state have the same hash, whichever engine ran them.

use crate::Machine;
use crate::board::Board;
use cpu::CpuState;
use cpu::model::{Base, CpuModel, Vendor};
use cpu::state::{DescTable, FpuState, Msrs, Quirks, Segment, VecState};
use vmcore::{SnapshotError, SnapshotReader, SnapshotWriter};

/// First tag of a machine snapshot.
const MAGIC: &str = "ferrite-machine-v1";

fn save_segment(w: &mut SnapshotWriter, s: &Segment) {
    let Segment { selector, attr, limit, base } = *s;
    w.u16(selector);
    w.u16(attr);
    w.u32(limit);
    w.u64(base);
}

fn restore_segment(r: &mut SnapshotReader<'_>) -> Result<Segment, SnapshotError> {
    Ok(Segment { selector: r.u16()?, attr: r.u16()?, limit: r.u32()?, base: r.u64()? })
}

fn save_table(w: &mut SnapshotWriter, t: &DescTable) {
    let DescTable { base, limit, _pad } = *t;
    w.u64(base);
    w.u32(limit);
    w.u32(_pad);
}

fn restore_table(r: &mut SnapshotReader<'_>) -> Result<DescTable, SnapshotError> {
    Ok(DescTable { base: r.u64()?, limit: r.u32()?, _pad: r.u32()? })
}

fn u64s<const N: usize>(r: &mut SnapshotReader<'_>) -> Result<[u64; N], SnapshotError> {
    let mut a = [0u64; N];
    for v in a.iter_mut() {
        *v = r.u64()?;
    }
    Ok(a)
}

fn u128s<const N: usize>(r: &mut SnapshotReader<'_>) -> Result<[u128; N], SnapshotError> {
    let mut a = [0u128; N];
    for v in a.iter_mut() {
        *v = u128::from(r.u64()?) | (u128::from(r.u64()?) << 64);
    }
    Ok(a)
}

fn save_msrs(w: &mut SnapshotWriter, m: &Msrs) {
    // Destructured without `..`: a new field is a compile error here until it is saved.
    let Msrs {
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        tsc_aux,
        tsc_offset,
        apic_base,
        pat,
        misc_enable,
        mtrr_def_type,
        mtrr_fixed,
        mtrr_var,
        feature_control,
        debugctl,
    } = *m;
    for v in [
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        tsc_aux,
        tsc_offset,
        apic_base,
        pat,
        misc_enable,
        mtrr_def_type,
    ] {
        w.u64(v);
    }
    mtrr_fixed.iter().chain(mtrr_var.iter()).for_each(|v| w.u64(*v));
    w.u64(feature_control);
    w.u64(debugctl);
}

fn restore_msrs(r: &mut SnapshotReader<'_>) -> Result<Msrs, SnapshotError> {
    let [
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        tsc_aux,
        tsc_offset,
        apic_base,
        pat,
        misc_enable,
        mtrr_def_type,
    ] = u64s::<14>(r)?;
    Ok(Msrs {
        sysenter_cs,
        sysenter_esp,
        sysenter_eip,
        star,
        lstar,
        cstar,
        sfmask,
        kernel_gs_base,
        tsc_aux,
        tsc_offset,
        apic_base,
        pat,
        misc_enable,
        mtrr_def_type,
        mtrr_fixed: u64s(r)?,
        mtrr_var: u64s(r)?,
        feature_control: r.u64()?,
        debugctl: r.u64()?,
    })
}

fn save_u128s(w: &mut SnapshotWriter, a: &[u128]) {
    for v in a {
        w.u64(*v as u64);
        w.u64((*v >> 64) as u64);
    }
}

fn save_fpu(w: &mut SnapshotWriter, f: &FpuState) {
    let FpuState { st, xmm, fcw, fsw, ftw, fop, mxcsr, _pad, fip, fdp, fcs, fds, _pad2 } = *f;
    save_u128s(w, &st);
    save_u128s(w, &xmm);
    for v in [fcw, fsw, ftw, fop] {
        w.u16(v);
    }
    w.u32(mxcsr);
    w.u32(_pad);
    w.u64(fip);
    w.u64(fdp);
    w.u16(fcs);
    w.u16(fds);
    w.u32(_pad2);
}

fn restore_fpu(r: &mut SnapshotReader<'_>) -> Result<FpuState, SnapshotError> {
    Ok(FpuState {
        st: u128s(r)?,
        xmm: u128s(r)?,
        fcw: r.u16()?,
        fsw: r.u16()?,
        ftw: r.u16()?,
        fop: r.u16()?,
        mxcsr: r.u32()?,
        _pad: r.u32()?,
        fip: r.u64()?,
        fdp: r.u64()?,
        fcs: r.u16()?,
        fds: r.u16()?,
        _pad2: r.u32()?,
    })
}

fn save_vec(w: &mut SnapshotWriter, v: &VecState) {
    let VecState { ymm_hi, zmm_hi256, hi16_zmm, k } = v;
    save_u128s(w, ymm_hi);
    zmm_hi256.iter().for_each(|z| save_u128s(w, z));
    hi16_zmm.iter().for_each(|z| save_u128s(w, z));
    k.iter().for_each(|v| w.u64(*v));
}

fn restore_vec(r: &mut SnapshotReader<'_>) -> Result<VecState, SnapshotError> {
    let ymm_hi = u128s(r)?;
    let mut zmm_hi256 = [[0u128; 2]; 16];
    for z in zmm_hi256.iter_mut() {
        *z = u128s(r)?;
    }
    let mut hi16_zmm = [[0u128; 4]; 16];
    for z in hi16_zmm.iter_mut() {
        *z = u128s(r)?;
    }
    Ok(VecState { ymm_hi, zmm_hi256, hi16_zmm, k: u64s(r)? })
}

/// Writes the CPU's architectural state.
pub fn save_cpu(w: &mut SnapshotWriter, c: &CpuState) {
    // Destructured without `..`: a new field is a compile error here until it is saved.
    let CpuState {
        gpr,
        rip,
        rflags,
        icount,
        seg,
        ldtr,
        tr,
        gdtr,
        idtr,
        cr0,
        cr2,
        cr3,
        cr4,
        cr8,
        efer,
        dr,
        xcr0,
        cpl,
        halted,
        nmi_blocked,
        quirks,
        monitor_armed,
        _pad,
        irq_shadow_icount,
        a20_mask,
        msr,
        rng_state,
        fpu,
        vec,
        model,
        pkru,
        // The JIT's lazy flag state is never pending outside its block runner (`cpu::lazyflags`):
        // `rflags` is complete here, and there is nothing to save.
        lazy: _,
    } = c;
    debug_assert!(!c.lazy.is_pending(), "a lazy flag state outside the JIT's block runner");
    w.tag("cpu");
    gpr.iter().for_each(|v| w.u64(*v));
    for v in [*rip, *rflags, *icount] {
        w.u64(v);
    }
    seg.iter().chain([ldtr, tr]).for_each(|s| save_segment(w, s));
    save_table(w, gdtr);
    save_table(w, idtr);
    for v in [*cr0, *cr2, *cr3, *cr4, *cr8, *efer] {
        w.u64(v);
    }
    dr.iter().for_each(|v| w.u64(*v));
    w.u64(*xcr0);
    w.u8(*cpl);
    w.bool(*halted);
    w.bool(*nmi_blocked);
    w.u8(*quirks as u8);
    w.bool(*monitor_armed);
    _pad.iter().for_each(|v| w.u8(*v));
    w.u64(*irq_shadow_icount);
    w.u64(*a20_mask);
    save_msrs(w, msr);
    w.u64(*rng_state);
    save_fpu(w, fpu);
    save_vec(w, vec);
    save_model(w, model);
    w.u32(*pkru);
}

/// Writes the CPU model (what CPUID says and which instructions exist are part of the machine).
fn save_model(w: &mut SnapshotWriter, m: &CpuModel) {
    let CpuModel { regs, signature, vendor, base, _pad } = m;
    w.tag("model");
    regs.iter().for_each(|v| w.u32(*v));
    w.u32(*signature);
    w.u8(*vendor as u8);
    w.u8(*base as u8);
    _pad.iter().for_each(|v| w.u8(*v));
}

fn restore_model(r: &mut SnapshotReader<'_>) -> Result<CpuModel, SnapshotError> {
    r.tag("model")?;
    let mut regs = [0u32; 7];
    for v in regs.iter_mut() {
        *v = r.u32()?;
    }
    let signature = r.u32()?;
    let vendor = match r.u8()? {
        0 => Vendor::Intel,
        1 => Vendor::Amd,
        v => return Err(SnapshotError::Invalid(format!("CPU vendor {v}"))),
    };
    let base = match r.u8()? {
        0 => Base::Ferrite,
        1 => Base::Qemu64,
        2 => Base::Max,
        3 => Base::HostCompatible,
        b => return Err(SnapshotError::Invalid(format!("CPU model {b}"))),
    };
    Ok(CpuModel { regs, signature, vendor, base, _pad: r.u8s()? })
}

/// Reads state written by [`save_cpu`].
pub fn restore_cpu(r: &mut SnapshotReader<'_>) -> Result<CpuState, SnapshotError> {
    r.tag("cpu")?;
    let gpr = u64s(r)?;
    let [rip, rflags, icount] = u64s(r)?;
    let mut seg = [Segment::default(); 6];
    for s in seg.iter_mut() {
        *s = restore_segment(r)?;
    }
    let ldtr = restore_segment(r)?;
    let tr = restore_segment(r)?;
    let gdtr = restore_table(r)?;
    let idtr = restore_table(r)?;
    let [cr0, cr2, cr3, cr4, cr8, efer] = u64s(r)?;
    let dr = u64s(r)?;
    let xcr0 = r.u64()?;
    let cpl = r.u8()?;
    if cpl > 3 {
        return Err(SnapshotError::Invalid(format!("CPL {cpl}")));
    }
    let halted = r.bool()?;
    let nmi_blocked = r.bool()?;
    let quirks = match r.u8()? {
        0 => Quirks::Intel,
        1 => Quirks::Amd,
        q => return Err(SnapshotError::Invalid(format!("quirks {q}"))),
    };
    let monitor_armed = r.bool()?;
    let _pad = r.u8s()?;
    Ok(CpuState {
        gpr,
        rip,
        rflags,
        icount,
        seg,
        ldtr,
        tr,
        gdtr,
        idtr,
        cr0,
        cr2,
        cr3,
        cr4,
        cr8,
        efer,
        dr,
        xcr0,
        cpl,
        halted,
        nmi_blocked,
        quirks,
        monitor_armed,
        _pad,
        irq_shadow_icount: r.u64()?,
        a20_mask: r.u64()?,
        msr: restore_msrs(r)?,
        rng_state: r.u64()?,
        fpu: restore_fpu(r)?,
        vec: restore_vec(r)?,
        model: restore_model(r)?,
        pkru: r.u32()?,
        lazy: cpu::lazyflags::LazyFlags::NONE,
    })
}

/// 64-bit hash over a byte stream, eight bytes at a time (not cryptographic: it tells states apart).
pub(crate) struct StateHasher {
    h: u64,
    tail: Vec<u8>,
}

impl StateHasher {
    pub(crate) fn new() -> Self {
        StateHasher { h: 0xcbf2_9ce4_8422_2325, tail: Vec::new() }
    }

    fn word(&mut self, v: u64) {
        self.h = (self.h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29) ^ (self.h >> 31);
    }

    pub(crate) fn write(&mut self, mut data: &[u8]) {
        if !self.tail.is_empty() {
            let need = 8 - self.tail.len();
            let take = need.min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.tail.len() == 8 {
                let v = u64::from_le_bytes(self.tail[..8].try_into().unwrap_or([0; 8]));
                self.word(v);
                self.tail.clear();
            }
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        self.tail.extend_from_slice(chunks.remainder());
    }

    pub(crate) fn finish(mut self) -> u64 {
        let n = self.tail.len() as u64;
        let mut last = [0u8; 8];
        last[..self.tail.len()].copy_from_slice(&self.tail);
        self.word(u64::from_le_bytes(last));
        self.word(n);
        // A final avalanche so that nearby states give unrelated hashes.
        let mut x = self.h;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// Feeds guest RAM to `f` in 64 KiB pieces.
fn ram_pieces(board: &Board, mut f: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; 1 << 16];
    let len = board.ram.len();
    let mut off = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        board.ram.read(off, &mut buf[..n]);
        f(&buf[..n]);
        off += n as u64;
    }
}

impl Machine {
    fn save_without_ram(&self, w: &mut SnapshotWriter) {
        w.tag(MAGIC);
        save_cpu(w, &self.cpu);
        self.board.save(w);
        self.engine.save_hidden(w);
        w.tag("ram");
        w.u64(self.board.ram.len());
    }

    /// The machine's state without RAM's contents (what [`Machine::save_state`] writes before RAM):
    /// snapshot files store RAM their own way.
    pub fn save_head(&self) -> Vec<u8> {
        self.save_head_writer().finish()
    }

    /// [`Machine::save_head`] as its writer, which can say which section a byte belongs to.
    pub fn save_head_writer(&self) -> SnapshotWriter {
        let mut w = SnapshotWriter::new();
        self.save_without_ram(&mut w);
        w
    }

    /// Restores [`Machine::save_head`]'s state; RAM's contents are left to the caller, who must then
    /// write every byte of it. On error the machine may be partly restored and should be dropped.
    pub fn restore_head(&mut self, head: &[u8]) -> Result<(), SnapshotError> {
        let mut r = SnapshotReader::new(head);
        self.restore_without_ram(&mut r)?;
        if r.remaining() != 0 {
            return Err(SnapshotError::Invalid(format!("{} bytes after the state", r.remaining())));
        }
        Ok(())
    }

    fn restore_without_ram(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag(MAGIC)?;
        let cpu = restore_cpu(r)?;
        self.board.restore(r)?;
        self.engine.flush_all();
        self.engine.restore_hidden(r, &cpu, &mut self.board)?;
        r.tag("ram")?;
        let len = r.u64()?;
        if len != self.board.ram.len() {
            return Err(SnapshotError::Invalid(format!(
                "snapshot has {len} bytes of RAM, this machine {}",
                self.board.ram.len()
            )));
        }
        self.cpu = cpu;
        self.board.icount = self.cpu.icount;
        Ok(())
    }

    /// The whole machine's state (see the module docs), RAM included.
    pub fn save_state(&self) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        self.save_without_ram(&mut w);
        let mut out = w.finish();
        out.reserve(self.board.ram.len() as usize);
        ram_pieces(&self.board, |p| out.extend_from_slice(p));
        out
    }

    /// Restores a snapshot of a machine built from the same configuration. On error the machine may be
    /// partly restored and should be dropped.
    pub fn restore_state(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        let mut r = SnapshotReader::new(data);
        self.restore_without_ram(&mut r)?;
        let consumed = data.len() - r.remaining();
        let ram = &data[consumed..];
        if ram.len() as u64 != self.board.ram.len() {
            return Err(SnapshotError::Truncated);
        }
        self.board.ram.write(0, ram);
        Ok(())
    }

    /// A hash of the whole machine state (what [`Machine::save_state`] writes), RAM hashed in place.
    pub fn state_hash(&self) -> u64 {
        let mut w = SnapshotWriter::new();
        self.save_without_ram(&mut w);
        let mut h = StateHasher::new();
        h.write(&w.finish());
        ram_pieces(&self.board, |p| h.write(p));
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_state_round_trips_and_truncation_is_an_error() {
        let mut c = CpuState::default();
        c.gpr[3] = 0x1122_3344_5566_7788;
        c.fpu.xmm[7] = u128::MAX - 5;
        c.fpu.st[2] = 1 << 100;
        c.vec.ymm_hi[3] = 77;
        c.vec.hi16_zmm[15][3] = 1 << 127;
        c.vec.k[7] = 5;
        c.msr.mtrr_var[15] = 9;
        c.seg[2].base = 0xdead_0000;
        c.quirks = Quirks::Amd;
        c.halted = true;
        let mut w = SnapshotWriter::new();
        save_cpu(&mut w, &c);
        let buf = w.finish();
        let back = restore_cpu(&mut SnapshotReader::new(&buf)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
        for cut in 0..buf.len() {
            assert!(restore_cpu(&mut SnapshotReader::new(&buf[..cut])).is_err());
        }
    }

    #[test]
    fn the_hash_sees_every_byte_and_its_position() {
        let hash = |d: &[u8]| {
            let mut h = StateHasher::new();
            h.write(d);
            h.finish()
        };
        let base: Vec<u8> = (0..100u8).collect();
        let split = {
            let mut h = StateHasher::new();
            h.write(&base[..13]);
            h.write(&base[13..]);
            h.finish()
        };
        assert_eq!(split, hash(&base), "the same stream in pieces");
        for i in [0usize, 7, 8, 50, 99] {
            let mut d = base.clone();
            d[i] ^= 1;
            assert_ne!(hash(&d), hash(&base), "byte {i}");
        }
        assert_ne!(hash(&base[..99]), hash(&base));
        assert_ne!(hash(&[0]), hash(&[0, 0]), "length counts");
    }
}
