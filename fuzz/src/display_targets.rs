//! The display and firmware-interface targets:
//!
//! - `vga`: the standard VGA with Bochs VBE (`chipset::vga`): port accesses (0x3B0-0x3DF), the legacy
//!   memory window in every memory map, chain-4, odd/even and planar mode with the write and read
//!   modes, DISPI registers (ports 0x1CE/0x1CF and the MMIO block of BAR2), the linear framebuffer,
//!   resets and snapshot round trips. Properties: no panic; a rendered frame has `width * height * 3`
//!   bytes and a text screen `cols * rows` cells with the cursor on the screen; rendering is a pure
//!   function of the state (twice gives the same frame); a snapshot restored into a fresh VGA saves to
//!   the same bytes.
//! - `fw-cfg`: the fw_cfg device holding the files a BIOS boot gives it (e820, the ACPI table loader's
//!   three files, a writable file): selector and data port reads and DMA transfers with hostile
//!   descriptors. Properties: no panic; reading a selected item through the data port gives its bytes
//!   and zeros past its end; DMA stays inside the fake memory.
//! - `table-loader`: `firmware::table_loader::build` on mutated ACPI tables (the tables the machine
//!   builds, with bytes changed and addresses moved). Properties: no panic; when it succeeds, running
//!   its commands as SeaBIOS does (bounds-checked) touches only bytes inside the two files, every
//!   pointer leads inside the tables file, and every checksummed range sums to zero afterwards.

use chipset::pci::PciFunction;
use chipset::vga::{DISPI_WINDOW, MEMORY_WINDOW, PORTS_WINDOW, Vga};
use chipset::{DmaMemory, FwCfg};
use firmware::acpi::{AcpiTables, PlatformConfig, build_tables};
use firmware::table_loader::{self, COMMAND_SIZE, LOADER_FILE, RSDP_FILE, TABLES_FILE};
use vmcore::snapshot::{SnapshotReader, SnapshotWriter};
use vmcore::{Device, DeviceCtx, IrqLevels, MachineRequests, Snapshot, VirtTime};

use crate::rng::Rng;

/// Reads operands from the input; past its end every read is zero.
struct Ops<'a> {
    d: &'a [u8],
    i: usize,
}

impl Ops<'_> {
    fn done(&self) -> bool {
        self.i >= self.d.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// A hash step for behaviour signatures.
fn mix(sig: u64, v: u64) -> u64 {
    (sig ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// Reads a DISPI register through ports 0x1CE/0x1CF.
fn dispi_reg(v: &mut Vga, ctx: &mut DeviceCtx<'_>, index: u16) -> u16 {
    v.bar_write(ctx, DISPI_WINDOW, 0, &index.to_le_bytes());
    let mut d = [0u8; 2];
    v.bar_read(ctx, DISPI_WINDOW, 1, &mut d);
    u16::from_le_bytes(d)
}

/// Renders `v` and checks the frame's shape; `None` for a VBE mode too big to render often (the
/// renderer handles up to 4096x4096, which takes long enough to slow the fuzzer, not to break it).
fn checked_render(v: &mut Vga, ctx: &mut DeviceCtx<'_>) -> Result<Option<chipset::vga::Frame>, String> {
    let enable = dispi_reg(v, ctx, 4);
    let (x, y) = (u64::from(dispi_reg(v, ctx, 1)), u64::from(dispi_reg(v, ctx, 2)));
    // Reading the registers with GETCAPS set gives the maxima, not the mode: look at ENABLE's bit 1 too.
    if enable & 1 != 0 && (enable & 2 != 0 || x * y > 1024 * 768) {
        return Ok(None);
    }
    let f = v.render();
    if f.rgb.len() != f.width * f.height * 3 {
        return Err(format!("a {}x{} frame with {} bytes", f.width, f.height, f.rgb.len()));
    }
    if let Some(t) = v.text_screen() {
        if t.cells.len() != t.cols * t.rows {
            return Err(format!("a {}x{} text screen with {} cells", t.cols, t.rows, t.cells.len()));
        }
        if let Some((c, r)) = t.cursor
            && (c >= t.cols || r >= t.rows)
        {
            return Err(format!("cursor ({c}, {r}) outside a {}x{} screen", t.cols, t.rows));
        }
    }
    if v.render() != f {
        return Err("two renders of the same state differ".into());
    }
    Ok(Some(f))
}

/// The `vga` target (see the module docs).
pub fn vga(input: &[u8]) -> Result<u64, String> {
    let mut v = Vga::new();
    let mut ops = Ops { d: input, i: 0 };
    let mut irq = IrqLevels::default();
    let mut requests = MachineRequests::default();
    let mut now = 0u64;
    let mut sig = 0u64;
    let (mut steps, mut renders, mut snapshots) = (0, 0, 0);
    while !ops.done() && steps < 1024 {
        steps += 1;
        let op = ops.u8();
        let mut ctx = DeviceCtx { now: VirtTime(now), irq: &mut irq, requests: &mut requests };
        match op % 12 {
            0 => {
                let port = 0x3B0 + u16::from(ops.u8()) % 0x30;
                v.port_write(port, ops.u8());
            }
            1 => {
                let port = 0x3B0 + u16::from(ops.u8()) % 0x30;
                sig = mix(sig, u64::from(v.port_read(now, port)));
            }
            // A register write pair (index, data) in one of the indexed blocks, the common case.
            2 => {
                let (idx, data) =
                    ([0x3C4u16, 0x3CE, 0x3D4, 0x3B4, 0x3C0][usize::from(ops.u8()) % 5], ops.u8());
                v.port_write(idx, ops.u8() & 0x3F);
                v.port_write(idx + u16::from(idx != 0x3C0), data);
            }
            3 => {
                let off = u64::from(ops.u32()) % 0x2_0000;
                v.mem_write(off, ops.u8());
            }
            4 => {
                let off = u64::from(ops.u32()) % 0x2_0000;
                sig = mix(sig, u64::from(v.mem_read(off)));
            }
            // DISPI index and data through the ports (16-bit).
            5 => {
                let idx = ops.u16() % 16;
                let val = ops.u16();
                v.bar_write(&mut ctx, DISPI_WINDOW, 0, &idx.to_le_bytes());
                v.bar_write(&mut ctx, DISPI_WINDOW, 1, &val.to_le_bytes());
            }
            6 => {
                let idx = ops.u16();
                sig = mix(sig, u64::from(dispi_reg(&mut v, &mut ctx, idx)));
            }
            // The linear framebuffer (BAR0) and the MMIO block (BAR2), any width.
            7 => {
                let window = if op & 0x80 != 0 { 2 } else { 0 };
                let off = u64::from(ops.u32()) % if window == 0 { 16 << 20 } else { 0x1000 };
                let len = 1usize << (ops.u8() % 4);
                let data = ops.u32().to_le_bytes().repeat(2);
                if op & 0x40 != 0 {
                    v.bar_write(&mut ctx, window, off, &data[..len]);
                } else {
                    let mut d = vec![0u8; len];
                    v.bar_read(&mut ctx, window, off, &mut d);
                    sig = mix(sig, u64::from(d[0]));
                }
            }
            // The fixed windows with wide accesses.
            8 => {
                let window = [PORTS_WINDOW, MEMORY_WINDOW, DISPI_WINDOW][usize::from(ops.u8()) % 3];
                let off = u64::from(ops.u32()) % 0x2_0000;
                let len = 1usize << (ops.u8() % 3);
                let mut d = ops.u32().to_le_bytes();
                if op & 0x40 != 0 {
                    v.bar_write(&mut ctx, window, off, &d[..len]);
                } else {
                    v.bar_read(&mut ctx, window, off, &mut d[..len]);
                    sig = mix(sig, u64::from(d[0]));
                }
            }
            9 => now = now.wrapping_add(u64::from(ops.u32())),
            // Rendering a large mode takes tens of milliseconds: once per input.
            10 if renders < 1 => {
                renders += 1;
                if let Some(f) = checked_render(&mut v, &mut ctx)? {
                    sig = mix(sig, (f.width as u64) << 32 | f.height as u64);
                }
            }
            // Each snapshot copies 16 MiB of video memory three times: one per input.
            11 if snapshots < 1 => {
                snapshots += 1;
                let mut w = SnapshotWriter::new();
                v.save(&mut w);
                let a = w.finish();
                let mut fresh = Vga::new();
                fresh
                    .restore(&mut SnapshotReader::new(&a))
                    .map_err(|e| format!("restoring a snapshot: {e}"))?;
                let mut w = SnapshotWriter::new();
                fresh.save(&mut w);
                if w.finish() != a {
                    return Err("snapshot round trip differs".into());
                }
                if op & 0x80 != 0 {
                    // A corrupt snapshot is refused or gives some state, never a panic.
                    let mut bad = a.clone();
                    let at = usize::from(ops.u16()) % bad.len().max(1);
                    bad.truncate(at);
                    if fresh.restore(&mut SnapshotReader::new(&bad)).is_ok() {
                        sig = mix(sig, 1);
                    }
                }
                v = fresh;
            }
            _ => {
                let _ = v.reset();
            }
        }
        sig = mix(sig, u64::from(irq.level));
    }
    if renders == 0 {
        let mut ctx = DeviceCtx { now: VirtTime(now), irq: &mut irq, requests: &mut requests };
        if let Some(f) = checked_render(&mut v, &mut ctx)? {
            sig = mix(sig, (f.width as u64) << 32 | f.height as u64);
        }
    }
    Ok(sig)
}

/// A seed for `vga`: a plausible register set-up (as a mode set would do it), then memory writes.
pub fn seed_vga(r: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..(4 + r.below(24)) {
        v.push(2);
        v.push(r.byte());
        v.push(r.byte());
        v.push(r.byte() & 0x1F);
    }
    if r.below(3) == 0 {
        // A VBE mode: XRES, YRES, BPP, then ENABLE.
        for (i, val) in [(1u16, 640u16), (2, 480), (3, [8u16, 16, 24, 32][r.below(4)]), (4, 0x41)] {
            v.push(5);
            v.extend(i.to_le_bytes());
            v.extend(val.to_le_bytes());
        }
    }
    for _ in 0..(8 + r.below(32)) {
        v.push([3u8, 4, 7, 0x47, 10][r.below(5)]);
        v.extend(r.bytes(8));
    }
    v.push(10);
    v
}

/// A fake guest memory of 64 KiB at physical 0; accesses outside fail.
struct FakeMem(Vec<u8>);

impl DmaMemory for FakeMem {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        match usize::try_from(addr).ok().and_then(|a| self.0.get(a..a.checked_add(buf.len())?)) {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => {
                buf.fill(0xff);
                false
            }
        }
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match usize::try_from(addr).ok().and_then(|a| self.0.get_mut(a..a.checked_add(data.len())?)) {
            Some(s) => {
                s.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// An fw_cfg holding what a BIOS boot gives it.
fn bios_fw_cfg() -> Result<FwCfg, String> {
    let mut f = FwCfg::new(256 << 20, 2);
    let files = table_loader::build(&build_tables(&PlatformConfig::default()))?;
    f.add_file("etc/e820", vec![0x11; 40], false)?;
    f.add_file(RSDP_FILE, files.rsdp, false)?;
    f.add_file(TABLES_FILE, files.tables, false)?;
    f.add_file(LOADER_FILE, files.loader, false)?;
    f.add_file("opt/ferrite/scratch", vec![0; 64], true)?;
    Ok(f)
}

/// The `fw-cfg` target (see the module docs).
pub fn fw_cfg(input: &[u8]) -> Result<u64, String> {
    let mut f = bios_fw_cfg()?;
    let mut ops = Ops { d: input, i: 0 };
    let mut irq = IrqLevels::default();
    let mut requests = MachineRequests::default();
    let mut mem = FakeMem(vec![0; 64 << 10]);
    let mut sig = 0u64;
    let mut steps = 0;
    while !ops.done() && steps < 256 {
        steps += 1;
        let op = ops.u8();
        let mut ctx = DeviceCtx { now: VirtTime(0), irq: &mut irq, requests: &mut requests };
        match op % 6 {
            // Select a key (mostly the real ones) and read some bytes: they must be the item's.
            0 => {
                let key = if op & 0x80 != 0 {
                    ops.u16()
                } else {
                    [0u16, 1, 3, 0x19, 0x20, 0x21, 0x22, 0x23, 0x24][usize::from(ops.u8()) % 9]
                };
                f.pio_write(&mut ctx, 0, &key.to_le_bytes());
                let n = usize::from(ops.u8());
                let want: Vec<u8> = f.item(key).map(|d| d.to_vec()).unwrap_or_default();
                for i in 0..n {
                    let mut b = [0u8];
                    f.pio_read(&mut ctx, (i & 1) as u16, &mut b);
                    let expect = want.get(i).copied().unwrap_or(0);
                    if b[0] != expect {
                        return Err(format!(
                            "key {key:#x} byte {i}: read {:#04x}, the item has {expect:#04x}",
                            b[0]
                        ));
                    }
                }
                sig = mix(sig, u64::from(key) << 8 | n as u64);
            }
            // A DMA descriptor in fake memory (often in range), then the trigger.
            1 => {
                let at = u64::from(ops.u16() % 0x1000) * 16 + if op & 0x80 != 0 { 0xFFF0 } else { 0 };
                let control = ops.u32();
                let len = if op & 0x40 != 0 { ops.u32() } else { u32::from(ops.u16() % 512) };
                let addr = u64::from(ops.u16()) + if op & 0x20 != 0 { u64::from(ops.u32()) << 16 } else { 0 };
                let mut d = control.to_be_bytes().to_vec();
                d.extend(len.to_be_bytes());
                d.extend(addr.to_be_bytes());
                let _ = mem.write(at, &d);
                f.pio_write(&mut ctx, 4, &((at >> 32) as u32).to_be_bytes());
                f.pio_write(&mut ctx, 8, &(at as u32).to_be_bytes());
                if let Some(desc) = f.take_dma_request() {
                    f.run_dma(desc, &mut mem);
                }
                let mut back = [0u8; 4];
                let _ = mem.read(at, &mut back);
                sig = mix(sig, u64::from(u32::from_be_bytes(back)));
            }
            // Raw port accesses of any width.
            2 => {
                let off = u16::from(ops.u8() % 16);
                let len = 1usize << (ops.u8() % 3);
                let mut d = ops.u32().to_le_bytes();
                if op & 0x80 != 0 {
                    f.pio_write(&mut ctx, off, &d[..len]);
                } else {
                    f.pio_read(&mut ctx, off, &mut d[..len]);
                    sig = mix(sig, u64::from(d[0]));
                }
            }
            3 => f.reset(),
            4 => {
                let mut w = SnapshotWriter::new();
                f.save(&mut w);
                let a = w.finish();
                let mut fresh = bios_fw_cfg()?;
                fresh
                    .restore(&mut SnapshotReader::new(&a))
                    .map_err(|e| format!("restoring a snapshot: {e}"))?;
                let mut w = SnapshotWriter::new();
                fresh.save(&mut w);
                if w.finish() != a {
                    return Err("snapshot round trip differs".into());
                }
                f = fresh;
            }
            _ => {
                // A DMA request left pending across other accesses, then run.
                f.pio_write(&mut ctx, 8, &ops.u32().to_be_bytes());
                if op & 0x80 != 0
                    && let Some(desc) = f.take_dma_request()
                {
                    f.run_dma(desc, &mut mem);
                }
            }
        }
    }
    Ok(sig)
}

/// A seed for `fw-cfg`: selects and reads, and DMA reads of the directory and files.
pub fn seed_fw_cfg(r: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..(2 + r.below(12)) {
        if r.below(2) == 0 {
            v.extend([0, r.byte(), r.byte()]);
        } else {
            // Select (bit 3) + read (bit 1) of a file key into memory.
            let key = 0x19 + r.below(6) as u16;
            let control = (u32::from(key) << 16) | 0x0A;
            v.push(1);
            v.extend((r.below(0x100) as u16).to_le_bytes());
            v.extend(control.to_le_bytes());
            v.extend((r.below(512) as u16).to_le_bytes());
            v.extend((0x8000u16 + r.below(0x4000) as u16).to_le_bytes());
        }
    }
    v
}

/// The tables the machine builds, with the input's edits: each edit is a table write (by index), an
/// offset in it and a byte to XOR in; a first byte with bit 0 set also moves the RSDP address.
fn mutated_tables(input: &[u8]) -> AcpiTables {
    let mut t = build_tables(&PlatformConfig::default());
    let mut ops = Ops { d: input, i: 0 };
    let first = ops.u8();
    if first & 1 != 0 {
        t.rsdp = t.rsdp.wrapping_add(u64::from(ops.u16()) & 0xFF0).wrapping_sub(0x800);
    }
    let n = t.writes.len().max(1);
    while !ops.done() {
        let w = usize::from(ops.u8()) % n;
        let off = usize::from(ops.u16());
        let x = ops.u8();
        if let Some((_, bytes)) = t.writes.get_mut(w)
            && !bytes.is_empty()
        {
            let at = off % bytes.len();
            bytes[at] ^= x;
        }
    }
    t
}

/// A NUL-terminated name field.
fn name(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())]
}

/// The `table-loader` target (see the module docs).
pub fn table_loader(input: &[u8]) -> Result<u64, String> {
    let t = mutated_tables(input);
    let files = match table_loader::build(&t) {
        Ok(f) => f,
        Err(e) => return Ok(mix(1, e.len() as u64)),
    };
    if files.loader.len() % COMMAND_SIZE != 0 {
        return Err(format!("a loader file of {} bytes", files.loader.len()));
    }
    // Where the firmware put the tables file (any address: pointers add it).
    let tables_at = 0x7F0_0000u64;
    let mut rsdp = files.rsdp.clone();
    let mut tables = files.tables.clone();
    let mut sums: Vec<(bool, usize, usize)> = Vec::new();
    let mut sig = 2u64;
    for (i, c) in files.loader.chunks(COMMAND_SIZE).enumerate() {
        let kind = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let file_of = |n: &[u8]| -> Result<bool, String> {
            match n {
                x if x == RSDP_FILE.as_bytes() => Ok(true),
                x if x == TABLES_FILE.as_bytes() => Ok(false),
                x => Err(format!("command {i} names the unknown file {:?}", String::from_utf8_lossy(x))),
            }
        };
        let w = |o: usize| u32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]) as usize;
        match kind {
            1 => {
                let _ = file_of(name(&c[4..60]))?;
            }
            2 => {
                let is_rsdp = file_of(name(&c[4..60]))?;
                if file_of(name(&c[60..116]))? {
                    return Err(format!("command {i} points into the RSDP file"));
                }
                let (at, size) = (w(116), usize::from(c[120]));
                if ![1, 2, 4, 8].contains(&size) {
                    return Err(format!("command {i}: a pointer of {size} bytes"));
                }
                let file = if is_rsdp { &mut rsdp } else { &mut tables };
                let field = file
                    .get_mut(at..at + size)
                    .ok_or_else(|| format!("command {i}: pointer field {at:#x} outside its file"))?;
                let mut v = [0u8; 8];
                v[..size].copy_from_slice(field);
                let target = u64::from_le_bytes(v);
                if target >= files.tables.len() as u64 {
                    return Err(format!("command {i}: pointer to {target:#x} past the tables file"));
                }
                field.copy_from_slice(&(target + tables_at).to_le_bytes()[..size]);
            }
            3 => {
                let is_rsdp = file_of(name(&c[4..60]))?;
                let (at, start, len) = (w(60), w(64), w(68));
                let file = if is_rsdp { &mut rsdp } else { &mut tables };
                if at >= file.len() || start.checked_add(len).is_none_or(|e| e > file.len()) {
                    return Err(format!("command {i}: checksum range outside its file"));
                }
                let sum = file[start..start + len].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                file[at] = file[at].wrapping_sub(sum);
                sums.push((is_rsdp, start, len));
            }
            k => return Err(format!("command {i} of unknown kind {k}")),
        }
        sig = mix(sig, u64::from(kind));
    }
    for (is_rsdp, start, len) in sums {
        let file = if is_rsdp { &rsdp } else { &tables };
        if file[start..start + len].iter().fold(0u8, |a, b| a.wrapping_add(*b)) != 0 {
            return Err(format!("the range {start:#x}+{len:#x} does not sum to zero after the commands"));
        }
    }
    Ok(sig)
}

/// A seed for `table-loader`: a few byte edits of the tables.
pub fn seed_table_loader(r: &mut Rng) -> Vec<u8> {
    let mut v = vec![r.byte() & 0xFE];
    for _ in 0..r.below(4) {
        v.push(r.byte());
        v.extend((r.below(64) as u16).to_le_bytes());
        v.push(1 << r.below(8));
    }
    v
}
