//! QEMU's firmware configuration device (fw_cfg), x86 I/O-port flavour, with its DMA interface.
//!
//! The interface follows QEMU's `docs/specs/fw_cfg.rst`; item keys are those of QEMU's
//! `include/standard-headers/linux/qemu_fw_cfg.h`.
//!
//! # Ports and offsets
//!
//! The machine maps ports 0x510-0x51B with offset base 0:
//!
//! | Port | Offset | Access | Meaning |
//! |---|---|---|---|
//! | 0x510 | 0 | 16-bit write | selector: picks an item, data offset back to 0 |
//! | 0x510, 0x511 | 0, 1 | 8-bit read | data: the next byte of the item (0 past its end or for no item) |
//! | 0x510, 0x511 | 0, 1 | 8-bit write | ignored (QEMU dropped data-port writes in v2.4) |
//! | 0x514-0x51B | 4-11 | read, any width | DMA signature `QEMU CFG`, big-endian (byte at 0x514 = 'Q') |
//! | 0x514 | 4 | 32-bit write | DMA address, high half (big-endian; clears the low half) |
//! | 0x518 | 8 | 32-bit write | DMA address, low half (big-endian; ORed in) — starts the transfer |
//!
//! Other widths and offsets read all ones and ignore writes (QEMU rejects them).
//!
//! # DMA
//!
//! The DMA address points at a `FWCfgDmaAccess` in guest memory: big-endian `control: u32`,
//! `length: u32`, `address: u64`. Control bits: 0 error, 1 read, 2 skip, 3 select (key in bits 16-31),
//! 4 write. A transfer selects (if bit 3), then reads the item into guest memory, writes guest memory
//! into a writable item, or skips, and finally stores the resulting control word (0, or the error bit)
//! back. Reading past an item's end zero-fills guest memory without moving the offset; a write must fit
//! the item entirely and the item must be writable. These are QEMU's rules.
//!
//! The device has no access to guest memory of its own: a trigger write leaves the request in
//! [`FwCfg::take_dma_request`], and the board runs it at once with [`FwCfg::run_dma`], handing over a
//! [`DmaMemory`] over guest RAM. The transfer is complete before the guest's next instruction, as in
//! QEMU (the spec allows asynchronous completion; guests poll the control word).
//!
//! # Items
//!
//! Always present: `FW_CFG_SIGNATURE` ("QEMU"), `FW_CFG_ID` (3: traditional interface and DMA),
//! `FW_CFG_UUID` (16 zero bytes), `FW_CFG_RAM_SIZE` (u64), `FW_CFG_NOGRAPHIC` (u16 0), `FW_CFG_NB_CPUS` and
//! `FW_CFG_MAX_CPUS` (u16), `FW_CFG_BOOT_MENU` (u16 0), `FW_CFG_IRQ0_OVERRIDE` (0x8002, u32 1: ISA IRQ 0 is
//! on I/O APIC pin 2), `FW_CFG_FILE_DIR`. Numbers are little-endian, except the file directory, which is
//! big-endian as specified. The machine adds named files with [`FwCfg::add_file`] (it provides
//! `etc/e820` always and, when it writes ACPI tables, `etc/acpi/rsdp` and `etc/acpi/tables`; see the
//! machine's docs) and the direct-boot items with [`FwCfg::set_kernel`], [`FwCfg::set_setup`],
//! [`FwCfg::set_initrd`] and [`FwCfg::set_cmdline`]. Files get selectors from 0x20 in name order, as in
//! QEMU. For a direct boot the ACPI blobs are the tables exactly as they already sit in guest memory,
//! with absolute pointers; for a BIOS boot the machine adds relocatable ones with `etc/table-loader`
//! (`firmware::table_loader`).

use std::collections::BTreeMap;
use vmcore::Snapshot;

use vmcore::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter};

/// `FW_CFG_SIGNATURE`: "QEMU".
pub const SIGNATURE: u16 = 0x00;
/// `FW_CFG_ID`: feature bits (bit 0 traditional interface, bit 1 DMA).
pub const ID: u16 = 0x01;
/// `FW_CFG_UUID`: the machine's 16-byte UUID.
pub const UUID: u16 = 0x02;
/// `FW_CFG_RAM_SIZE`: RAM in bytes (u64).
pub const RAM_SIZE: u16 = 0x03;
/// `FW_CFG_NOGRAPHIC` (u16).
pub const NOGRAPHIC: u16 = 0x04;
/// `FW_CFG_NB_CPUS`: CPUs present at boot (u16).
pub const NB_CPUS: u16 = 0x05;
/// `FW_CFG_KERNEL_ADDR` (u32).
pub const KERNEL_ADDR: u16 = 0x07;
/// `FW_CFG_KERNEL_SIZE` (u32).
pub const KERNEL_SIZE: u16 = 0x08;
/// `FW_CFG_INITRD_ADDR` (u32).
pub const INITRD_ADDR: u16 = 0x0a;
/// `FW_CFG_INITRD_SIZE` (u32).
pub const INITRD_SIZE: u16 = 0x0b;
/// `FW_CFG_BOOT_MENU` (u16).
pub const BOOT_MENU: u16 = 0x0e;
/// `FW_CFG_MAX_CPUS`: one more than the highest APIC ID (u16).
pub const MAX_CPUS: u16 = 0x0f;
/// `FW_CFG_KERNEL_ENTRY` (u32).
pub const KERNEL_ENTRY: u16 = 0x10;
/// `FW_CFG_KERNEL_DATA`: the kernel image.
pub const KERNEL_DATA: u16 = 0x11;
/// `FW_CFG_INITRD_DATA`: the initrd image.
pub const INITRD_DATA: u16 = 0x12;
/// `FW_CFG_CMDLINE_ADDR` (u32).
pub const CMDLINE_ADDR: u16 = 0x13;
/// `FW_CFG_CMDLINE_SIZE`: length including the terminating NUL (u32).
pub const CMDLINE_SIZE: u16 = 0x14;
/// `FW_CFG_CMDLINE_DATA`: the command line, NUL-terminated.
pub const CMDLINE_DATA: u16 = 0x15;
/// `FW_CFG_SETUP_ADDR` (u32).
pub const SETUP_ADDR: u16 = 0x16;
/// `FW_CFG_SETUP_SIZE` (u32).
pub const SETUP_SIZE: u16 = 0x17;
/// `FW_CFG_SETUP_DATA`: a bzImage's real-mode setup code.
pub const SETUP_DATA: u16 = 0x18;
/// `FW_CFG_FILE_DIR`: the directory of named files.
pub const FILE_DIR: u16 = 0x19;
/// `FW_CFG_FILE_FIRST`: selector of the first named file.
pub const FILE_FIRST: u16 = 0x20;
/// `FW_CFG_IRQ0_OVERRIDE` (x86-specific, u32).
pub const IRQ0_OVERRIDE: u16 = 0x8002;
/// Selector bit 14: write channel (ignored since QEMU 2.4; the item is the same).
pub const WRITE_CHANNEL: u16 = 0x4000;
/// Selector bit 15: architecture-specific item.
pub const ARCH_LOCAL: u16 = 0x8000;
/// Longest file name, including the terminating NUL.
pub const MAX_FILE_PATH: usize = 56;
/// Most named files the device holds (selectors 0x20..0x20+this).
pub const MAX_FILES: usize = 0x100;

/// DMA control: error.
pub const DMA_CTL_ERROR: u32 = 0x01;
/// DMA control: read the item into guest memory.
pub const DMA_CTL_READ: u32 = 0x02;
/// DMA control: skip bytes of the item.
pub const DMA_CTL_SKIP: u32 = 0x04;
/// DMA control: select the item in bits 16-31 first.
pub const DMA_CTL_SELECT: u32 = 0x08;
/// DMA control: write guest memory into the item.
pub const DMA_CTL_WRITE: u32 = 0x10;
/// What the DMA address register reads as: "QEMU CFG", big-endian.
pub const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;

/// Guest memory as the DMA engine sees it. Both calls return false when any byte of the range is not
/// RAM (the transfer then ends with the error bit).
pub trait DmaMemory {
    /// Reads `buf.len()` bytes at guest physical `addr`.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool;
    /// Writes `data` at guest physical `addr`.
    fn write(&mut self, addr: u64, data: &[u8]) -> bool;
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Item {
    data: Vec<u8>,
    writable: bool,
}

/// The fw_cfg device.
#[derive(Clone, Debug)]
pub struct FwCfg {
    /// Items by key (write-channel bit cleared, arch bit kept).
    items: BTreeMap<u16, Item>,
    /// Named files: name → key.
    files: BTreeMap<String, u16>,
    /// The selected key (write-channel bit cleared), or `None` for an invalid selection.
    cur: Option<u16>,
    /// Offset into the selected item.
    offset: u32,
    /// The DMA address register.
    dma_addr: u64,
    /// A transfer the board has to run.
    dma_pending: Option<u64>,
}

fn entry_key(selector: u16) -> u16 {
    selector & !WRITE_CHANNEL
}

impl FwCfg {
    /// A device describing a machine with `ram_size` bytes of RAM and `cpus` CPUs.
    pub fn new(ram_size: u64, cpus: u16) -> FwCfg {
        let mut d = FwCfg {
            items: BTreeMap::new(),
            files: BTreeMap::new(),
            cur: Some(SIGNATURE),
            offset: 0,
            dma_addr: 0,
            dma_pending: None,
        };
        d.set_item(SIGNATURE, b"QEMU".to_vec());
        d.set_item(ID, 3u32.to_le_bytes().to_vec());
        d.set_item(UUID, vec![0; 16]);
        d.set_item(RAM_SIZE, ram_size.to_le_bytes().to_vec());
        d.set_item(NOGRAPHIC, 0u16.to_le_bytes().to_vec());
        d.set_item(NB_CPUS, cpus.to_le_bytes().to_vec());
        d.set_item(MAX_CPUS, cpus.to_le_bytes().to_vec());
        d.set_item(BOOT_MENU, 0u16.to_le_bytes().to_vec());
        d.set_item(IRQ0_OVERRIDE, 1u32.to_le_bytes().to_vec());
        d.rebuild_dir();
        d
    }

    /// Sets item `key` (read-only) to `data`, replacing it.
    pub fn set_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(entry_key(key), Item { data, writable: false });
    }

    /// The contents of item `key`, if present.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&entry_key(key)).map(|i| &i.data[..])
    }

    /// The selector of file `name`, if present.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.files.get(name).copied()
    }

    /// Adds (or replaces) the named file. `writable` lets the guest change it through DMA writes (never
    /// its size). Selectors are reassigned in name order, as QEMU does.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>, writable: bool) -> Result<(), String> {
        if name.is_empty() || name.len() >= MAX_FILE_PATH || name.contains('\0') {
            return Err(format!("fw_cfg file name {name:?} must be 1-55 bytes without NUL"));
        }
        if !self.files.contains_key(name) && self.files.len() >= MAX_FILES {
            return Err(format!("fw_cfg: more than {MAX_FILES} files"));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(format!("fw_cfg file {name}: {} bytes do not fit the 32-bit size", data.len()));
        }
        // Take the old contents out, then lay the files out again in name order.
        let mut contents: BTreeMap<String, Item> = BTreeMap::new();
        for (n, k) in std::mem::take(&mut self.files) {
            if let Some(it) = self.items.remove(&k) {
                contents.insert(n, it);
            }
        }
        contents.insert(name.to_string(), Item { data, writable });
        for (i, (n, it)) in contents.into_iter().enumerate() {
            let key = FILE_FIRST + i as u16;
            self.items.insert(key, it);
            self.files.insert(n, key);
        }
        self.rebuild_dir();
        Ok(())
    }

    /// Direct boot: the kernel image at `addr` (what QEMU calls the protected-mode part for a bzImage)
    /// and its entry point. Sets `KERNEL_ADDR`, `KERNEL_SIZE`, `KERNEL_DATA`, `KERNEL_ENTRY`.
    pub fn set_kernel(&mut self, addr: u32, entry: u32, data: Vec<u8>) {
        self.set_item(KERNEL_ADDR, addr.to_le_bytes().to_vec());
        self.set_item(KERNEL_SIZE, (data.len() as u32).to_le_bytes().to_vec());
        self.set_item(KERNEL_ENTRY, entry.to_le_bytes().to_vec());
        self.set_item(KERNEL_DATA, data);
    }

    /// Direct boot: a bzImage's setup code at `addr`. Sets `SETUP_ADDR`, `SETUP_SIZE`, `SETUP_DATA`.
    pub fn set_setup(&mut self, addr: u32, data: Vec<u8>) {
        self.set_item(SETUP_ADDR, addr.to_le_bytes().to_vec());
        self.set_item(SETUP_SIZE, (data.len() as u32).to_le_bytes().to_vec());
        self.set_item(SETUP_DATA, data);
    }

    /// Direct boot: the initrd at `addr`. Sets `INITRD_ADDR`, `INITRD_SIZE`, `INITRD_DATA`.
    pub fn set_initrd(&mut self, addr: u32, data: Vec<u8>) {
        self.set_item(INITRD_ADDR, addr.to_le_bytes().to_vec());
        self.set_item(INITRD_SIZE, (data.len() as u32).to_le_bytes().to_vec());
        self.set_item(INITRD_DATA, data);
    }

    /// Direct boot: the command line at `addr`. Sets `CMDLINE_ADDR`, `CMDLINE_SIZE` (with the NUL) and
    /// `CMDLINE_DATA` (NUL-terminated).
    pub fn set_cmdline(&mut self, addr: u32, cmdline: &str) {
        let mut data = cmdline.as_bytes().to_vec();
        data.push(0);
        self.set_item(CMDLINE_ADDR, addr.to_le_bytes().to_vec());
        self.set_item(CMDLINE_SIZE, (data.len() as u32).to_le_bytes().to_vec());
        self.set_item(CMDLINE_DATA, data);
    }

    fn rebuild_dir(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        let mut by_key: Vec<(&String, &u16)> = self.files.iter().collect();
        by_key.sort_by_key(|(_, k)| **k);
        for (name, key) in by_key {
            let size = self.items.get(key).map_or(0, |i| i.data.len() as u32);
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; MAX_FILE_PATH];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.items.insert(FILE_DIR, Item { data: dir, writable: false });
    }

    /// Selects `selector` (the selector register or a DMA select).
    fn select(&mut self, selector: u16) {
        self.offset = 0;
        // Every key with the write-channel bit cleared is in range; one without an item reads zeros.
        self.cur = Some(entry_key(selector));
    }

    fn current(&self) -> Option<&Item> {
        self.cur.and_then(|k| self.items.get(&k))
    }

    /// The next data byte (0 past the end or with no item).
    fn read_data(&mut self) -> u8 {
        let off = self.offset as usize;
        match self.current().and_then(|i| i.data.get(off).copied()) {
            Some(b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// A DMA transfer the guest started, to be run with [`FwCfg::run_dma`] (its `FWCfgDmaAccess` address).
    pub fn take_dma_request(&mut self) -> Option<u64> {
        self.dma_pending.take()
    }

    /// Runs the transfer described by the `FWCfgDmaAccess` at `desc` over `mem`. Guest memory is always
    /// written (at least the control word), so the board drops decoded code afterwards.
    pub fn run_dma(&mut self, desc: u64, mem: &mut dyn DmaMemory) {
        let mut raw = [0u8; 16];
        if !mem.read(desc, &mut raw) {
            mem.write(desc, &DMA_CTL_ERROR.to_be_bytes());
            return;
        }
        let control = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mut length = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let mut address =
            u64::from_be_bytes([raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]]);
        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let (read, write) = if control & DMA_CTL_READ != 0 {
            (true, false)
        } else if control & DMA_CTL_WRITE != 0 {
            (false, true)
        } else if control & DMA_CTL_SKIP != 0 {
            (false, false)
        } else {
            length = 0;
            (false, false)
        };
        let mut status = 0u32;
        while length > 0 && status & DMA_CTL_ERROR == 0 {
            let off = self.offset as usize;
            let avail = self.current().map_or(0, |i| i.data.len().saturating_sub(off));
            let len;
            if avail == 0 {
                // Past the end (or no item): reads give zeros, writes fail, the offset stays.
                len = length;
                if read && !fill_zero(mem, address, u64::from(len)) {
                    status |= DMA_CTL_ERROR;
                }
                if write {
                    status |= DMA_CTL_ERROR;
                }
            } else {
                len = length.min(avail as u32);
                let n = len as usize;
                if read {
                    let item = self.current().map(|i| &i.data[off..off + n]).unwrap_or(&[]);
                    if !mem.write(address, item) {
                        status |= DMA_CTL_ERROR;
                    }
                }
                if write {
                    let mut buf = vec![0u8; n];
                    let ok = len == length && mem.read(address, &mut buf);
                    match self.cur.and_then(|k| self.items.get_mut(&k)) {
                        Some(item) if ok && item.writable => item.data[off..off + n].copy_from_slice(&buf),
                        _ => status |= DMA_CTL_ERROR,
                    }
                }
                self.offset = self.offset.wrapping_add(len);
            }
            address = address.wrapping_add(u64::from(len));
            length -= len;
        }
        mem.write(desc, &status.to_be_bytes());
    }
}

/// Writes `len` zero bytes at `addr` in page-sized pieces (the length may be up to 4 GiB).
fn fill_zero(mem: &mut dyn DmaMemory, addr: u64, len: u64) -> bool {
    let zeros = [0u8; 4096];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(4096) as usize;
        if !mem.write(addr.wrapping_add(done), &zeros[..n]) {
            return false;
        }
        done += n as u64;
    }
    true
}

impl Device for FwCfg {
    fn name(&self) -> &str {
        "fw-cfg"
    }

    fn pio_access_width(&self) -> usize {
        4
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        match (offset, data.len()) {
            (0 | 1, 1) => data[0] = self.read_data(),
            (4..=11, n) if usize::from(offset) - 4 + n <= 8 => {
                let sig = DMA_SIGNATURE.to_be_bytes();
                let s = usize::from(offset) - 4;
                data.copy_from_slice(&sig[s..s + n]);
            }
            _ => data.fill(0xff),
        }
    }

    fn pio_write(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        match (offset, data.len()) {
            (0, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (4, 4) => {
                let hi = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.dma_addr = u64::from(hi) << 32;
            }
            (8, 4) => {
                let lo = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.dma_addr |= u64::from(lo);
                self.dma_pending = Some(self.dma_addr);
                self.dma_addr = 0;
            }
            // Data-port writes (ignored since QEMU 2.4) and widths QEMU rejects.
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.select(SIGNATURE);
        self.dma_addr = 0;
        self.dma_pending = None;
    }
}

impl Snapshot for FwCfg {
    type Restored = ();

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.bool(self.cur.is_some());
        w.u16(self.cur.unwrap_or(0));
        w.u32(self.offset);
        w.u64(self.dma_addr);
        w.bool(self.dma_pending.is_some());
        w.u64(self.dma_pending.unwrap_or(0));
        // Writable items are guest state; the rest is configuration the machine rebuilds.
        let writable: Vec<(&u16, &Item)> = self.items.iter().filter(|(_, i)| i.writable).collect();
        w.u32(writable.len() as u32);
        for (k, i) in writable {
            w.u16(*k);
            w.bytes(&i.data);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError> {
        r.tag("fw-cfg")?;
        let has_cur = r.bool()?;
        let cur = r.u16()?;
        let offset = r.u32()?;
        let dma_addr = r.u64()?;
        let has_pending = r.bool()?;
        let pending = r.u64()?;
        let n = r.u32()?;
        let mut writes = Vec::new();
        for _ in 0..n {
            let key = r.u16()?;
            let data = r.bytes()?;
            match self.items.get(&key) {
                Some(i) if i.writable && i.data.len() == data.len() => writes.push((key, data.to_vec())),
                _ => return Err(SnapshotError::Invalid(format!("fw_cfg writable item {key:#x}"))),
            }
        }
        for (k, d) in writes {
            if let Some(i) = self.items.get_mut(&k) {
                i.data = d;
            }
        }
        self.cur = has_cur.then_some(cur);
        self.offset = offset;
        self.dma_addr = dma_addr;
        self.dma_pending = has_pending.then_some(pending);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Bus, hammer, roundtrip};

    /// 1 MiB of guest RAM at 0; everything else is not memory.
    struct Ram(Vec<u8>);

    impl DmaMemory for Ram {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
            let end = addr.checked_add(buf.len() as u64);
            match end {
                Some(e) if e <= self.0.len() as u64 => {
                    buf.copy_from_slice(&self.0[addr as usize..e as usize]);
                    true
                }
                _ => false,
            }
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> bool {
            let end = addr.checked_add(data.len() as u64);
            match end {
                Some(e) if e <= self.0.len() as u64 => {
                    self.0[addr as usize..e as usize].copy_from_slice(data);
                    true
                }
                _ => false,
            }
        }
    }

    fn select(d: &mut FwCfg, b: &mut Bus, key: u16) {
        d.pio_write(&mut b.ctx(0), 0, &key.to_le_bytes());
    }

    fn read_bytes(d: &mut FwCfg, b: &mut Bus, n: usize) -> Vec<u8> {
        (0..n).map(|i| b.rd(d, 0, (i & 1) as u16)).collect()
    }

    /// Writes a descriptor at `desc` and triggers it through the ports (32-bit address: low half only).
    fn dma(d: &mut FwCfg, b: &mut Bus, ram: &mut Ram, desc: u64, control: u32, len: u32, addr: u64) -> u32 {
        let mut raw = control.to_be_bytes().to_vec();
        raw.extend_from_slice(&len.to_be_bytes());
        raw.extend_from_slice(&addr.to_be_bytes());
        ram.write(desc, &raw);
        d.pio_write(&mut b.ctx(0), 4, &((desc >> 32) as u32).to_be_bytes());
        d.pio_write(&mut b.ctx(0), 8, &(desc as u32).to_be_bytes());
        let req = d.take_dma_request().expect("trigger");
        assert_eq!(req, desc);
        assert_eq!(d.take_dma_request(), None);
        d.run_dma(req, ram);
        let mut c = [0u8; 4];
        ram.read(desc, &mut c);
        u32::from_be_bytes(c)
    }

    fn dev() -> FwCfg {
        let mut d = FwCfg::new(256 << 20, 1);
        d.add_file("etc/zeta", b"last".to_vec(), false).unwrap();
        d.add_file("etc/alpha", b"first file".to_vec(), false).unwrap();
        d.add_file("opt/rw", vec![0u8; 8], true).unwrap();
        d
    }

    #[test]
    fn signature_id_and_numbers() {
        let mut d = dev();
        let mut b = Bus::new();
        // Power-on selection is the signature.
        assert_eq!(read_bytes(&mut d, &mut b, 4), b"QEMU");
        select(&mut d, &mut b, SIGNATURE);
        assert_eq!(read_bytes(&mut d, &mut b, 6), b"QEMU\0\0", "zeros past the end");
        select(&mut d, &mut b, ID);
        assert_eq!(read_bytes(&mut d, &mut b, 4), [3, 0, 0, 0]);
        select(&mut d, &mut b, RAM_SIZE);
        assert_eq!(read_bytes(&mut d, &mut b, 8), (256u64 << 20).to_le_bytes());
        select(&mut d, &mut b, NB_CPUS);
        assert_eq!(read_bytes(&mut d, &mut b, 2), [1, 0]);
        select(&mut d, &mut b, MAX_CPUS);
        assert_eq!(read_bytes(&mut d, &mut b, 2), [1, 0]);
        // The write-channel bit selects the same item; an unknown key reads zeros.
        select(&mut d, &mut b, SIGNATURE | WRITE_CHANNEL);
        assert_eq!(read_bytes(&mut d, &mut b, 4), b"QEMU");
        select(&mut d, &mut b, 0x3abc);
        assert_eq!(read_bytes(&mut d, &mut b, 2), [0, 0]);
        select(&mut d, &mut b, IRQ0_OVERRIDE);
        assert_eq!(read_bytes(&mut d, &mut b, 4), [1, 0, 0, 0]);
        // Data-port writes are ignored; a byte write to the selector port is a data write.
        select(&mut d, &mut b, SIGNATURE);
        b.wr(&mut d, 0, 1, 0x55);
        b.wr(&mut d, 0, 0, 0x01);
        assert_eq!(read_bytes(&mut d, &mut b, 4), b"QEMU");
        // Wide reads of the data port are rejected.
        let mut w = [0u8; 2];
        d.pio_read(&mut b.ctx(0), 0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
    }

    #[test]
    fn file_directory_sorted_big_endian() {
        let mut d = dev();
        let mut b = Bus::new();
        select(&mut d, &mut b, FILE_DIR);
        let dir = read_bytes(&mut d, &mut b, 4 + 3 * 64);
        assert_eq!(&dir[..4], &3u32.to_be_bytes());
        let names: Vec<(u32, u16, String)> = dir[4..]
            .chunks(64)
            .map(|e| {
                let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
                let sel = u16::from_be_bytes([e[4], e[5]]);
                let name = e[8..].split(|c| *c == 0).next().unwrap();
                (size, sel, String::from_utf8(name.to_vec()).unwrap())
            })
            .collect();
        assert_eq!(
            names,
            vec![
                (10, 0x20, "etc/alpha".to_string()),
                (4, 0x21, "etc/zeta".to_string()),
                (8, 0x22, "opt/rw".to_string())
            ]
        );
        select(&mut d, &mut b, 0x21);
        assert_eq!(read_bytes(&mut d, &mut b, 4), b"last");
        assert_eq!(d.file_key("etc/alpha"), Some(0x20));
        assert!(d.add_file("", vec![], false).is_err());
        assert!(d.add_file(&"x".repeat(56), vec![], false).is_err());
        // Replacing a file keeps one entry.
        d.add_file("etc/zeta", b"LAST!".to_vec(), false).unwrap();
        select(&mut d, &mut b, FILE_DIR);
        assert_eq!(read_bytes(&mut d, &mut b, 4), 3u32.to_be_bytes());
        select(&mut d, &mut b, 0x21);
        assert_eq!(read_bytes(&mut d, &mut b, 5), b"LAST!");
    }

    #[test]
    fn kernel_items() {
        let mut d = FwCfg::new(64 << 20, 1);
        let mut b = Bus::new();
        d.set_kernel(0x10_0000, 0x10_000c, vec![1, 2, 3]);
        d.set_initrd(0x20_0000, vec![9; 5]);
        d.set_cmdline(0x9_0000, "console=ttyS0");
        d.set_setup(0x1_0000, vec![7; 2]);
        for (key, want) in [
            (KERNEL_ADDR, 0x10_0000u32.to_le_bytes().to_vec()),
            (KERNEL_SIZE, 3u32.to_le_bytes().to_vec()),
            (KERNEL_ENTRY, 0x10_000cu32.to_le_bytes().to_vec()),
            (KERNEL_DATA, vec![1, 2, 3]),
            (INITRD_ADDR, 0x20_0000u32.to_le_bytes().to_vec()),
            (INITRD_SIZE, 5u32.to_le_bytes().to_vec()),
            (INITRD_DATA, vec![9; 5]),
            (CMDLINE_ADDR, 0x9_0000u32.to_le_bytes().to_vec()),
            (CMDLINE_SIZE, 14u32.to_le_bytes().to_vec()),
            (CMDLINE_DATA, b"console=ttyS0\0".to_vec()),
            (SETUP_ADDR, 0x1_0000u32.to_le_bytes().to_vec()),
            (SETUP_SIZE, 2u32.to_le_bytes().to_vec()),
            (SETUP_DATA, vec![7; 2]),
        ] {
            select(&mut d, &mut b, key);
            assert_eq!(read_bytes(&mut d, &mut b, want.len()), want, "key {key:#x}");
        }
    }

    #[test]
    fn dma_signature_register() {
        let mut d = dev();
        let mut b = Bus::new();
        let mut w = [0u8; 4];
        d.pio_read(&mut b.ctx(0), 4, &mut w);
        assert_eq!(&w, b"QEMU");
        d.pio_read(&mut b.ctx(0), 8, &mut w);
        assert_eq!(&w, b" CFG");
        assert_eq!(b.rd(&mut d, 0, 11), b'G');
        // Byte and word writes to the DMA register are rejected; nothing starts.
        d.pio_write(&mut b.ctx(0), 8, &[1]);
        d.pio_write(&mut b.ctx(0), 8, &[1, 2]);
        assert_eq!(d.take_dma_request(), None);
    }

    #[test]
    fn dma_select_read_skip_and_zero_fill() {
        let mut d = dev();
        let mut b = Bus::new();
        let mut ram = Ram(vec![0xaa; 1 << 20]);
        let key = u32::from(d.file_key("etc/alpha").unwrap());
        // Select + read 5 bytes.
        let st =
            dma(&mut d, &mut b, &mut ram, 0x1000, (key << 16) | DMA_CTL_SELECT | DMA_CTL_READ, 5, 0x2000);
        assert_eq!(st, 0);
        assert_eq!(&ram.0[0x2000..0x2006], b"first\xaa");
        // Skip one byte, then read the rest and beyond: the tail is zero-filled.
        assert_eq!(dma(&mut d, &mut b, &mut ram, 0x1000, DMA_CTL_SKIP, 1, 0), 0);
        assert_eq!(dma(&mut d, &mut b, &mut ram, 0x1000, DMA_CTL_READ, 8, 0x3000), 0);
        assert_eq!(&ram.0[0x3000..0x3009], b"file\0\0\0\0\xaa");
        // The port interface shares the offset: past the end now.
        assert_eq!(b.rd(&mut d, 0, 1), 0);
        // Select only (no read/skip/write): zero length, selection changes.
        assert_eq!(
            dma(&mut d, &mut b, &mut ram, 0x1000, u32::from(SIGNATURE) << 16 | DMA_CTL_SELECT, 9, 0),
            0
        );
        assert_eq!(read_bytes(&mut d, &mut b, 4), b"QEMU");
        // A 64-bit descriptor address: two writes, high half first; the register clears afterwards.
        let mut big = BigRam(Ram(vec![0; 0x2000]));
        let desc = 0x1_0000_0000u64;
        let mut raw = (DMA_CTL_SELECT | DMA_CTL_READ | (u32::from(ID) << 16)).to_be_bytes().to_vec();
        raw.extend_from_slice(&4u32.to_be_bytes());
        raw.extend_from_slice(&0x1_0000_0100u64.to_be_bytes());
        big.write(desc, &raw);
        d.pio_write(&mut b.ctx(0), 4, &1u32.to_be_bytes());
        d.pio_write(&mut b.ctx(0), 8, &0u32.to_be_bytes());
        let req = d.take_dma_request().unwrap();
        assert_eq!(req, desc);
        d.run_dma(req, &mut big);
        assert_eq!(&big.0.0[0x100..0x104], &[3, 0, 0, 0]);
        assert_eq!(&big.0.0[0..4], &[0; 4]);
        d.pio_write(&mut b.ctx(0), 8, &0x1000u32.to_be_bytes());
        assert_eq!(d.take_dma_request(), Some(0x1000), "high half cleared after the transfer");
    }

    /// RAM at 4 GiB.
    struct BigRam(Ram);

    impl DmaMemory for BigRam {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
            addr >= 1 << 32 && self.0.read(addr - (1 << 32), buf)
        }
        fn write(&mut self, addr: u64, data: &[u8]) -> bool {
            addr >= 1 << 32 && self.0.write(addr - (1 << 32), data)
        }
    }

    #[test]
    fn dma_errors_and_writes() {
        let mut d = dev();
        let mut b = Bus::new();
        let mut ram = Ram(vec![0; 1 << 20]);
        let rw = u32::from(d.file_key("opt/rw").unwrap());
        let ro = u32::from(d.file_key("etc/zeta").unwrap());
        // Destination outside RAM: error bit.
        let st =
            dma(&mut d, &mut b, &mut ram, 0x1000, (ro << 16) | DMA_CTL_SELECT | DMA_CTL_READ, 4, 0xffff_ff00);
        assert_eq!(st, DMA_CTL_ERROR);
        // Huge zero-fill past the end runs into the end of RAM: error, no panic, no huge allocation.
        let st = dma(&mut d, &mut b, &mut ram, 0x1000, DMA_CTL_READ, u32::MAX, 0x8_0000);
        assert_eq!(st, DMA_CTL_ERROR);
        // Writes to a read-only item fail and leave it alone.
        ram.0[0x2000..0x2004].copy_from_slice(b"HACK");
        let st =
            dma(&mut d, &mut b, &mut ram, 0x1000, (ro << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE, 4, 0x2000);
        assert_eq!(st, DMA_CTL_ERROR);
        assert_eq!(d.item(ro as u16).unwrap(), b"last");
        // A writable item takes a write that fits...
        let st =
            dma(&mut d, &mut b, &mut ram, 0x1000, (rw << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE, 4, 0x2000);
        assert_eq!(st, 0);
        assert_eq!(d.item(rw as u16).unwrap(), b"HACK\0\0\0\0");
        // ... but not one running past its end (dropped entirely).
        let st = dma(&mut d, &mut b, &mut ram, 0x1000, DMA_CTL_WRITE, 8, 0x2000);
        assert_eq!(st, DMA_CTL_ERROR);
        assert_eq!(d.item(rw as u16).unwrap(), b"HACK\0\0\0\0");
        // A descriptor outside RAM: nothing to report to; no panic.
        d.pio_write(&mut b.ctx(0), 8, &0xffff_fff8u32.to_be_bytes());
        let req = d.take_dma_request().unwrap();
        d.run_dma(req, &mut ram);
        // Snapshot keeps the writable item's contents and the selection.
        let mut fresh = dev();
        roundtrip(&d, &mut fresh);
        assert_eq!(fresh.item(rw as u16).unwrap(), b"HACK\0\0\0\0");
    }

    #[test]
    fn reset_snapshot_and_hammer() {
        let mut d = dev();
        let mut b = Bus::new();
        select(&mut d, &mut b, FILE_DIR);
        let _ = read_bytes(&mut d, &mut b, 3);
        d.pio_write(&mut b.ctx(0), 4, &1u32.to_be_bytes());
        let mut fresh = dev();
        roundtrip(&d, &mut fresh);
        assert_eq!(read_bytes(&mut fresh, &mut b, 1), [3], "offset restored (4th byte of the count)");
        d.reset();
        assert_eq!(read_bytes(&mut d, &mut b, 4), b"QEMU");
        let mut other = FwCfg::new(1 << 20, 1);
        let mut w = SnapshotWriter::new();
        d.save(&mut w);
        let buf = w.finish();
        assert!(other.restore(&mut SnapshotReader::new(&buf)).is_err(), "writable item missing here");
        hammer(&mut d, &[0, 1, 4, 8], false, 7);
        let mut ram = Ram(vec![0; 1 << 16]);
        if let Some(r) = d.take_dma_request() {
            d.run_dma(r, &mut ram);
        }
    }
}
