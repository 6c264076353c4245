//! Direct-boot dispatch (bzImage or multiboot kernel), the fw_cfg contents, and the QEMU test interfaces
//! (pc-testdev, Bochs shutdown port).
//!
//! [`plan`] picks the protocol for `--kernel`: a bzImage goes to `firmware::linux`; anything else that
//! carries a multiboot header goes to `firmware::multiboot`. The machine writes the returned memory, puts
//! the chipset in the BIOS's state (`Machine::redo_direct_boot`) and loads the entry registers
//! ([`enter_multiboot`] for multiboot).
//!
//! # fw_cfg contents ([`fill_fw_cfg`])
//!
//! Besides the fixed items (`chipset::fw_cfg`): the file `etc/e820` (the machine's e820 map, QEMU's
//! 20-byte packed `{u64 address, u64 length, u32 type}` entries); with ACPI tables in memory,
//! `etc/acpi/rsdp` (the RSDP) and `etc/acpi/tables` (the EBDA from the first byte after the RSDP to the
//! end of the last table, exactly as it lies in memory: its pointers are already absolute, so there is no
//! `etc/table-loader`; a BIOS boot gets relocatable tables with one instead, `fill_fw_cfg_for_bios`).
//! For a direct boot, the kernel items: a bzImage's setup sectors in `SETUP_*` and
//! the rest in `KERNEL_*`, the initrd in `INITRD_*`; a multiboot kernel's file in `KERNEL_*` with its
//! entry point and lowest load address; the command line in `CMDLINE_*` for both.

use chipset::testdev::{IOMEM_BASE, IOMEM_SIZE, IRQ_OFFSET, IRQ_PORTS};
use chipset::{FwCfg, ShutdownPort, TestDev};
use cpu::CpuState;
use cpu::state::{Seg, Segment, attr, cr0};
use firmware::acpi::AcpiTables;
use firmware::linux::{BootPlan, MemoryLayout};
use firmware::multiboot::{self, BootSetup};

use crate::board::Board;
use crate::{LinuxBoot, MachineError};

/// A planned direct boot.
#[derive(Clone, Debug)]
pub(crate) enum Loader {
    /// A bzImage through the 64-bit boot protocol.
    Linux(BootPlan),
    /// A multiboot v1 kernel.
    Multiboot(BootSetup),
}

impl Loader {
    /// The memory the boot writes.
    pub(crate) fn writes(&self) -> &[(u64, Vec<u8>)] {
        match self {
            Loader::Linux(p) => &p.writes,
            Loader::Multiboot(s) => &s.writes,
        }
    }

    /// Ranges the boot clears (a multiboot kernel's bss).
    pub(crate) fn zero(&self) -> &[(u64, u64)] {
        match self {
            Loader::Linux(_) => &[],
            Loader::Multiboot(s) => &s.zero,
        }
    }
}

/// Plans the direct boot of `boot.kernel`: a bzImage, else a multiboot kernel. The error names the
/// problem in one line.
pub(crate) fn plan(boot: &LinuxBoot, mem: &MemoryLayout, rsdp: Option<u64>) -> Result<Loader, String> {
    match firmware::linux::plan(&boot.kernel, boot.initrd.as_deref(), &boot.cmdline, mem, rsdp) {
        Ok(p) => Ok(Loader::Linux(p)),
        Err(linux_err) => {
            let is_bzimage = boot.kernel.get(0x202..0x206) == Some(b"HdrS");
            match multiboot::find_header(&boot.kernel) {
                Ok(Some(_)) if !is_bzimage => {
                    if boot.initrd.is_some() {
                        return Err("a multiboot kernel takes modules (--initrd a,b), not one initrd".into());
                    }
                    multiboot::load(&boot.kernel, &boot.cmdline, &boot.modules, mem).map(Loader::Multiboot)
                }
                Err(e) if !is_bzimage => Err(e),
                Ok(None) if !is_bzimage => Err(
                    "kernel is neither a bzImage (no \"HdrS\" setup header) nor a multiboot kernel (no multiboot header in its first 8 KiB)"
                        .into(),
                ),
                _ => Err(linux_err.0),
            }
        }
    }
}

/// Loads the multiboot entry state: 32-bit flat protected mode, paging off, interrupts off, A20 on
/// (the caller has reset the CPU; `a20_mask` is all ones after a reset).
pub(crate) fn enter_multiboot(cpu: &mut CpuState, e: &multiboot::EntryState) {
    cpu.reset();
    let flat = |selector: u16, ty: u16| Segment {
        selector,
        attr: attr::P | attr::S | ty | attr::ACCESSED | attr::DB | attr::G,
        limit: 0xffff_ffff,
        base: 0,
    };
    cpu.seg = [flat(e.ds, attr::RW); 6];
    cpu.seg[Seg::Cs as usize] = flat(e.cs, attr::CODE | attr::RW);
    cpu.gdtr.base = u64::from(e.gdt_base);
    cpu.gdtr.limit = u32::from(e.gdt_limit);
    cpu.idtr.base = 0;
    cpu.idtr.limit = 0x3ff;
    cpu.cr0 = cr0::PE | cr0::ET;
    cpu.rip = u64::from(e.eip);
    cpu.gpr = [0; 16];
    cpu.gpr[0] = u64::from(e.eax);
    cpu.gpr[3] = u64::from(e.ebx);
    cpu.gpr[4] = u64::from(e.esp);
    cpu.rflags = cpu::state::flags::FIXED1;
}

/// Fills fw_cfg: `etc/e820`, the ACPI files when `tables` were written, and the direct-boot items.
pub(crate) fn fill_fw_cfg(
    fw: &mut FwCfg,
    mem: &MemoryLayout,
    tables: Option<&AcpiTables>,
    boot: Option<(&LinuxBoot, &Loader)>,
) -> Result<(), String> {
    let mut e820 = Vec::new();
    for e in mem.e820() {
        e820.extend_from_slice(&e.addr.to_le_bytes());
        e820.extend_from_slice(&e.size.to_le_bytes());
        e820.extend_from_slice(&e.kind.to_le_bytes());
    }
    fw.add_file("etc/e820", e820, false)?;
    if let Some(t) = tables {
        let rsdp = t.writes.iter().find(|(a, _)| *a == t.rsdp).map(|(_, b)| b.clone()).unwrap_or_default();
        let start = t.rsdp + rsdp.len() as u64;
        let end = t.writes.iter().map(|(a, b)| a + b.len() as u64).max().unwrap_or(start);
        let mut blob = vec![0u8; end.saturating_sub(start) as usize];
        for (a, b) in &t.writes {
            if *a >= start {
                let o = (a - start) as usize;
                blob[o..o + b.len()].copy_from_slice(b);
            }
        }
        fw.add_file("etc/acpi/rsdp", rsdp, false)?;
        fw.add_file("etc/acpi/tables", blob, false)?;
    }
    match boot {
        Some((b, Loader::Linux(p))) => {
            let h = &p.header;
            let split = h.setup_offset().min(b.kernel.len());
            fw.set_setup(0x9_0000, b.kernel[..split].to_vec());
            fw.set_kernel(
                firmware::linux::KERNEL_ADDR as u32,
                p.entry.rip as u32,
                b.kernel[split..].to_vec(),
            );
            if let (Some((addr, _)), Some(rd)) = (p.initrd, &b.initrd) {
                fw.set_initrd(addr as u32, rd.clone());
            }
            fw.set_cmdline(firmware::linux::CMDLINE_ADDR as u32, &b.cmdline);
        }
        Some((b, Loader::Multiboot(s))) => {
            fw.set_kernel(s.kernel.0 as u32, s.entry.eip, b.kernel.clone());
            fw.set_cmdline(0, &b.cmdline);
        }
        None => {}
    }
    Ok(())
}

/// Fills fw_cfg for a BIOS boot (see [`crate::BiosConfig`]): QEMU's `etc/e820` (RAM only), the ACPI
/// tables with `etc/table-loader` (PM block at [`crate::PM_BASE`], where SeaBIOS moves it when it finds
/// a table loader), the SMBIOS structures as `etc/smbios/smbios-anchor` and `-tables`, and the extra
/// `files`.
pub(crate) fn fill_fw_cfg_for_bios(
    fw: &mut FwCfg,
    lay: &vmcore::layout::RamLayout,
    files: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), String> {
    let mut e820 = Vec::new();
    for (addr, size) in [(0u64, lay.below_4g), (vmcore::layout::FOUR_GIB, lay.above_4g)] {
        if size > 0 {
            e820.extend_from_slice(&addr.to_le_bytes());
            e820.extend_from_slice(&size.to_le_bytes());
            e820.extend_from_slice(&firmware::linux::E820_RAM.to_le_bytes());
        }
    }
    fw.add_file("etc/e820", e820, false)?;
    let cfg = firmware::acpi::PlatformConfig {
        pm_base: crate::PM_BASE,
        pci_hole_start: lay.below_4g.min(vmcore::layout::IOAPIC_BASE) as u32,
        ..Default::default()
    };
    let l = firmware::table_loader::build(&firmware::acpi::build_tables(&cfg))?;
    fw.add_file(firmware::table_loader::RSDP_FILE, l.rsdp, false)?;
    fw.add_file(firmware::table_loader::TABLES_FILE, l.tables, false)?;
    fw.add_file(firmware::table_loader::LOADER_FILE, l.loader, false)?;
    let [cpuid_eax, _, _, cpuid_edx] = cpu::cpuid::cpuid(1, 0, 0);
    let (anchor, tables) = firmware::smbios::fw_cfg_files(&firmware::smbios::SmbiosConfig {
        address: 0xF_0000,
        below_4g: lay.below_4g,
        above_4g: lay.above_4g,
        cpuid_eax,
        cpuid_edx,
        cpu_mhz: 1000,
        rom_size: 0x2_0000,
    });
    fw.add_file("etc/smbios/smbios-anchor", anchor, false)?;
    fw.add_file("etc/smbios/smbios-tables", tables, false)?;
    for (name, data) in files.drain(..) {
        fw.add_file(&name, data, false)?;
    }
    Ok(())
}

/// Fills fw_cfg for `--kernel` under a BIOS: the bzImage laid out by `firmware::linuxboot::prepare` in
/// the `SETUP_*`, `KERNEL_*`, `INITRD_*` and `CMDLINE_*` items, the linuxboot option ROM as
/// `genroms/linuxboot.bin`, and a `bootorder` naming it first (unless the configuration brought its own).
pub(crate) fn fill_fw_cfg_for_bios_kernel(
    fw: &mut FwCfg,
    lay: &vmcore::layout::RamLayout,
    l: &LinuxBoot,
) -> Result<(), String> {
    use firmware::linuxboot as lb;
    if !l.modules.is_empty() {
        return Err("multiboot modules cannot be loaded through the BIOS (give a bzImage)".into());
    }
    let b = lb::prepare(&l.kernel, l.initrd.as_deref(), &l.cmdline, lay.below_4g)?;
    fw.set_setup(lb::SETUP_ADDR, b.setup);
    fw.set_kernel(lb::KERNEL_ADDR, lb::KERNEL_ADDR, b.kernel);
    if let Some((addr, rd)) = b.initrd {
        fw.set_initrd(addr, rd);
    }
    fw.set_cmdline(lb::CMDLINE_ADDR, &b.cmdline);
    fw.add_file(lb::ROM_FILE, lb::rom(), false)?;
    if fw.file_key("bootorder").is_none() {
        fw.add_file("bootorder", lb::BOOTORDER.as_bytes().to_vec(), false)?;
    }
    Ok(())
}

/// The Bochs shutdown port at 0x8900 (always present).
pub(crate) fn add_shutdown_port(board: &mut Board) {
    let id = board.add_device(Box::new(ShutdownPort::new()));
    board.map_ports(id, 0x8900, 1, 0);
}

/// QEMU's pc-testdev (`--device testdev`): ports 0xE0-0xE7 and 0x2000-0x2017, 64 KiB of scratch memory
/// at 0xFF000000, which a firmware image larger than 16 MiB - 64 KiB would overlap.
pub(crate) fn add_testdev(board: &mut Board) -> Result<(), MachineError> {
    let id = board.add_device(Box::new(TestDev::new()));
    board.map_ports(id, 0xe0, 8, 0);
    board.map_ports(id, 0x2000, IRQ_PORTS, IRQ_OFFSET);
    board.map_mmio(id, IOMEM_BASE, IOMEM_SIZE as u64).map_err(|e| {
        MachineError::Firmware(format!(
            "pc-testdev's scratch memory at {IOMEM_BASE:#x} overlaps the firmware image ({e}); images up to 16 MiB - 64 KiB fit beside it"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> MemoryLayout {
        MemoryLayout {
            below_4g: 64 << 20,
            above_4g: 0,
            ebda_start: firmware::acpi::EBDA_BASE,
            rom_size: 0x1_0000,
        }
    }

    /// A flat multiboot kernel at 1 MiB (a.out kludge): header, then `hlt`.
    fn mb_kernel() -> Vec<u8> {
        let flags = 0x0001_0000u32;
        let mut k = Vec::new();
        for v in [
            0x1BAD_B002u32,
            flags,
            0u32.wrapping_sub(0x1BAD_B002 + flags),
            0x10_0000,
            0x10_0000,
            0,
            0,
            0x10_0020,
        ] {
            k.extend_from_slice(&v.to_le_bytes());
        }
        k.resize(0x20, 0);
        k.push(0xf4);
        k
    }

    #[test]
    fn dispatch_picks_the_protocol() {
        let boot = LinuxBoot {
            kernel: mb_kernel(),
            cmdline: "k mbtest".into(),
            modules: vec![firmware::multiboot::Module { data: vec![1, 2, 3], cmdline: "m".into() }],
            ..Default::default()
        };
        let Ok(Loader::Multiboot(s)) = plan(&boot, &mem(), None) else { panic!("not multiboot") };
        assert_eq!(s.entry.eip, 0x10_0020);
        assert_eq!(s.modules.len(), 1);
        let junk = LinuxBoot { kernel: vec![0x55; 5000], ..Default::default() };
        assert!(plan(&junk, &mem(), None).unwrap_err().contains("nor a multiboot kernel"));
        let with_initrd = LinuxBoot { initrd: Some(vec![0; 10]), ..boot.clone() };
        assert!(plan(&with_initrd, &mem(), None).unwrap_err().contains("modules"));
        let mut bad = mb_kernel();
        bad[8] ^= 1;
        let bad = LinuxBoot { kernel: bad, ..Default::default() };
        assert!(plan(&bad, &mem(), None).unwrap_err().contains("checksum"));
    }

    #[test]
    fn multiboot_entry_state() {
        let boot = LinuxBoot { kernel: mb_kernel(), ..Default::default() };
        let Ok(Loader::Multiboot(s)) = plan(&boot, &mem(), None) else { panic!("not multiboot") };
        let mut cpu = CpuState::default();
        enter_multiboot(&mut cpu, &s.entry);
        assert_eq!(cpu.mode(), cpu::state::Mode::Protected);
        assert_eq!(cpu.code_bits(), 32);
        assert_eq!(cpu.gpr[0], 0x2BAD_B002);
        assert_eq!(cpu.gpr[3], firmware::multiboot::INFO_ADDR);
        assert_eq!(cpu.rip, 0x10_0020);
        assert_eq!(cpu.rflags & cpu::state::flags::IF, 0);
        assert_eq!(cpu.cr0 & cr0::PG, 0);
        assert_eq!(cpu.seg[Seg::Ss as usize].limit, 0xffff_ffff);
        assert_eq!(cpu.a20_mask, !0);
    }

    #[test]
    fn fw_cfg_files_and_kernel_items() {
        let tables = firmware::acpi::build_tables(&firmware::acpi::PlatformConfig::default());
        let boot = LinuxBoot { kernel: mb_kernel(), cmdline: "k mbtest".into(), ..Default::default() };
        let loader = plan(&boot, &mem(), Some(tables.rsdp)).unwrap();
        let mut fw = FwCfg::new(64 << 20, 1);
        fill_fw_cfg(&mut fw, &mem(), Some(&tables), Some((&boot, &loader))).unwrap();
        let e820 = fw.item(fw.file_key("etc/e820").unwrap()).unwrap();
        assert_eq!(e820.len(), 20 * mem().e820().len());
        let rsdp = fw.item(fw.file_key("etc/acpi/rsdp").unwrap()).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        let blob = fw.item(fw.file_key("etc/acpi/tables").unwrap()).unwrap();
        assert!(blob.windows(4).any(|w| w == b"FACP") && blob.windows(4).any(|w| w == b"APIC"));
        assert_eq!(fw.item(chipset::fw_cfg::KERNEL_DATA).unwrap(), &boot.kernel[..]);
        assert_eq!(fw.item(chipset::fw_cfg::KERNEL_ENTRY).unwrap(), &0x10_0020u32.to_le_bytes());
        assert_eq!(fw.item(chipset::fw_cfg::CMDLINE_DATA).unwrap(), b"k mbtest\0");
        // Without tables or a boot: only etc/e820.
        let mut fw = FwCfg::new(64 << 20, 1);
        fill_fw_cfg(&mut fw, &mem(), None, None).unwrap();
        assert!(fw.file_key("etc/e820").is_some() && fw.file_key("etc/acpi/rsdp").is_none());
    }
}
