//! The disk test kernel `mb_disk` (`src/kernels/mb_disk.asm`): ATA PIO and bus-master DMA on the PIIX3
//! IDE controller and a command list (with NCQ) on the ICH9 AHCI controller, driven without an OS.
//!
//! Each run gets fresh images made here: `ide.img` (4096 sectors, IDE primary master) and `sata.img`
//! (6144 sectors, AHCI port 0), dword i of sector n holding `(n << 16) | i`. The kernel checks what it
//! reads and writes some sectors with the pattern XORed with a mask; afterwards the host checks exactly
//! those sectors changed, to exactly those values. The same kernel and images run on the machine under
//! the interpreter and under the JIT (same output, same instruction count, same images) and under QEMU
//! TCG (`-drive if=ide` and `-device ahci`), whose images must end byte for byte equal to Ferrite's.

use machine::{Accel, LinuxBoot, Machine, MachineConfig, RunOutcome};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IDE_SECTORS: u32 = 4096;
const SATA_SECTORS: u32 = 6144;
/// (disk, first sector, sectors, mask) of every write the kernel makes.
const WRITES: &[(&str, u32, u32, u32)] =
    &[("ide", 100, 2, 0xFFFF_FFFF), ("ide", 300, 8, 0x5A5A_5A5A), ("sata", 400, 8, 0x3C3C_3C3C)];

fn pattern(sectors: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(sectors as usize * 512);
    for n in 0..sectors {
        for i in 0..128u32 {
            v.extend_from_slice(&((n << 16) | i).to_le_bytes());
        }
    }
    v
}

/// What each image must hold after a passing run.
fn expected(disk: &str, sectors: u32) -> Vec<u8> {
    let mut v = pattern(sectors);
    for &(d, first, n, mask) in WRITES.iter().filter(|w| w.0 == disk) {
        for s in first..first + n {
            for i in 0..128u32 {
                let o = s as usize * 512 + i as usize * 4;
                v[o..o + 4].copy_from_slice(&(((s << 16) | i) ^ mask).to_le_bytes());
            }
        }
        assert_eq!(d, disk);
    }
    v
}

/// A fresh directory with both images.
fn fresh_images(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ferrite-mb-disk-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ide = dir.join("ide.img");
    let sata = dir.join("sata.img");
    std::fs::write(&ide, pattern(IDE_SECTORS)).unwrap();
    std::fs::write(&sata, pattern(SATA_SECTORS)).unwrap();
    (dir, ide, sata)
}

/// A machine booting `mb_disk` over the IDE image and, when given, the AHCI image; its debug console.
fn machine(ide: &Path, sata: Option<&Path>, accel: Accel) -> (Machine, Arc<Mutex<Vec<u8>>>) {
    let mut specs = vec![storage::config::DiskSpec::shorthand(ide, 0)];
    if let Some(s) = sata {
        specs.push(storage::config::DiskSpec::parse(&format!("{},if=ahci", s.display())).unwrap());
    }
    let controllers = storage::config::build(&specs).expect("open the images");
    machine_with(controllers.ide, controllers.ahci, accel)
}

/// A machine booting `mb_disk` with these controllers.
fn machine_with(
    ide: storage::IdeController,
    ahci: Option<storage::Ahci>,
    accel: Accel,
) -> (Machine, Arc<Mutex<Vec<u8>>>) {
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(128 << 20, Vec::new());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.accel = accel;
    cfg.jit_threshold = 1;
    cfg.ide = Some(ide);
    if let Some(ahci) = ahci {
        cfg.devices
            .push(machine::DeviceSpec::Pci { devfn: storage::config::AHCI_DEVFN, function: Box::new(ahci) });
    }
    cfg.linux = Some(LinuxBoot {
        kernel: test_roms::kernel("mb_disk").expect("mb_disk assembled").to_vec(),
        initrd: None,
        cmdline: "mb_disk.bin mbtest".into(),
        modules: Vec::new(),
    });
    (Machine::new(cfg).expect("machine"), out)
}

/// Runs `mb_disk` on the machine with the IDE disk and, when given, the AHCI disk; returns the
/// outcome, the debug-console output and the retired-instruction count.
fn run_on_machine(ide: &Path, sata: Option<&Path>, accel: Accel) -> (RunOutcome, String, u64) {
    let (mut m, out) = machine(ide, sata, accel);
    let outcome = m.run(Some(500_000_000));
    let icount = m.cpu.icount;
    drop(m); // closes (and flushes) the images
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    (outcome, output, icount)
}

fn assert_passes(what: &str, outcome: &RunOutcome, output: &str) {
    let fails: Vec<&str> = output.lines().filter(|l| l.starts_with("FAIL")).collect();
    let passes = output.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(
        *outcome == RunOutcome::Exited(1) && fails.is_empty() && passes >= 50,
        "{what}: outcome {outcome:?}, {passes} passed, failures:\n{}\n--- output ---\n{output}",
        fails.join("\n"),
    );
}

fn assert_images(what: &str, ide: &Path, sata: &Path) {
    for (name, path, sectors) in [("ide", ide, IDE_SECTORS), ("sata", sata, SATA_SECTORS)] {
        let got = std::fs::read(path).unwrap();
        let want = expected(name, sectors);
        assert_eq!(got.len(), want.len(), "{what}: {name} image size");
        if let Some(o) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!("{what}: {name} image differs first at byte {o} (sector {})", o / 512);
        }
    }
}

/// The kernel passes under the interpreter and under the JIT (every block translated on first entry)
/// with the same output and instruction count, and the images end holding exactly what it wrote.
#[test]
fn mb_disk_passes_under_interp_and_jit() {
    let mut runs = Vec::new();
    for (tag, accel) in [("interp", Accel::Interp), ("jit", Accel::Jit)] {
        let (dir, ide, sata) = fresh_images(tag);
        let run = run_on_machine(&ide, Some(&sata), accel);
        assert_passes(&format!("mb_disk under {tag}"), &run.0, &run.1);
        assert_images(&format!("mb_disk under {tag}"), &ide, &sata);
        std::fs::remove_dir_all(&dir).unwrap();
        runs.push(run);
    }
    assert_eq!(runs[0], runs[1], "interp vs jit: outcome, output and instruction count");
}

/// The harness can fail: without the AHCI disk the AHCI cases fail and the exit status says so.
#[test]
fn mb_disk_fails_without_the_ahci_controller() {
    let (dir, ide, _) = fresh_images("noahci");
    let (outcome, output, _) = run_on_machine(&ide, None, Accel::Interp);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.contains("FAIL: AHCI: controller of class 01:06:01"), "output:\n{output}");
    assert!(output.contains("PASS: IDE: READ DMA data"), "output:\n{output}");
    assert!(matches!(outcome, RunOutcome::Exited(s) if s != 1), "outcome {outcome:?}");
}

fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The same kernel and images under QEMU TCG: it passes there, and QEMU's images end equal to
/// Ferrite's (both equal to what the kernel wrote).
#[test]
fn mb_disk_passes_under_qemu_tcg_with_the_same_images() {
    if !qemu_available() {
        eprintln!("qemu-system-x86_64 not installed: skipping the QEMU cross-check (run scripts/setup.sh)");
        return;
    }
    let (dir, ide, sata) = fresh_images("qemu");
    let kernel = dir.join("mb_disk.bin");
    std::fs::write(&kernel, test_roms::kernel("mb_disk").unwrap()).unwrap();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-display", "none", "-nodefaults", "-no-reboot", "-m", "128", "-kernel"])
        .arg(&kernel)
        .args(["-append", "mbtest", "-drive"])
        .arg(format!("file={},if=ide,format=raw,index=0", ide.display()))
        .args(["-device", "ahci,id=ahci", "-drive"])
        .arg(format!("file={},if=none,id=s0,format=raw", sata.display()))
        .args(["-device", "ide-hd,drive=s0,bus=ahci.0"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-debugcon", "stdio", "-serial", "none", "-monitor", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let outcome = match status.and_then(|s| s.code()) {
        Some(c) => RunOutcome::Exited(c),
        None => RunOutcome::Stopped {
            reason: format!("QEMU ended with {status:?}"),
            dump: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
    };
    assert_passes("mb_disk under QEMU", &outcome, &stdout);
    assert_images("mb_disk under QEMU", &ide, &sata);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whole-machine snapshots with disk controllers: `mb_disk` saved at many points of its run (so some
/// land with a PIO block half read, a DMA transfer or an AHCI command in flight, and its completion
/// pending) and restored into a fresh machine over copies of the images taken at the same point ends
/// like the uninterrupted run: same console output, same instruction count, same images, same hash of
/// the whole machine state (CPU, devices including the IDE and AHCI controllers, RAM).
#[test]
fn mb_disk_restored_from_snapshots_mid_transfer_ends_the_same() {
    let (dir, ide, sata) = fresh_images("snap-whole");
    let (mut whole, whole_out) = machine(&ide, Some(&sata), Accel::Interp);
    assert_eq!(whole.run(Some(500_000_000)), RunOutcome::Exited(1));
    let total = whole.cpu.icount;
    let whole_text = String::from_utf8_lossy(&whole_out.lock().unwrap()).into_owned();
    let whole_hash = whole.state_hash();
    drop(whole);
    let whole_images = (std::fs::read(&ide).unwrap(), std::fs::read(&sata).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    const POINTS: u64 = 24;
    for k in 1..POINTS {
        let at = total * k / POINTS;
        let (dir, ide, sata) = fresh_images(&format!("snap-{k}"));
        let (mut first, out1) = machine(&ide, Some(&sata), Accel::Interp);
        assert_eq!(first.run(Some(at)), RunOutcome::InstructionLimit);
        let snap = first.save_state();
        drop(first); // flushes the images: they now hold what the guest wrote up to `at`
        let copy = dir.join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        let (ide2, sata2) = (copy.join("ide.img"), copy.join("sata.img"));
        std::fs::copy(&ide, &ide2).unwrap();
        std::fs::copy(&sata, &sata2).unwrap();
        let (mut second, out2) = machine(&ide2, Some(&sata2), Accel::Jit);
        second.restore_state(&snap).unwrap_or_else(|e| panic!("restore at {at}: {e:?}"));
        assert_eq!(second.run(Some(500_000_000)), RunOutcome::Exited(1), "restored at {at}");
        let text = String::from_utf8_lossy(&out1.lock().unwrap()).into_owned()
            + &String::from_utf8_lossy(&out2.lock().unwrap());
        assert_eq!(text, whole_text, "console output across a snapshot at {at} of {total}");
        assert_eq!(second.cpu.icount, total, "instruction count, snapshot at {at}");
        assert_eq!(second.state_hash(), whole_hash, "machine state hash, snapshot at {at}");
        drop(second);
        let images = (std::fs::read(&ide2).unwrap(), std::fs::read(&sata2).unwrap());
        assert!(images == whole_images, "images after a snapshot at {at} differ from the whole run's");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A disk in memory whose every operation takes a varying amount of host time (a pseudo-random 0-3 ms),
/// standing for a slow or contended host disk.
struct SlowBackend {
    inner: storage::MemBackend,
    state: u64,
}

impl SlowBackend {
    fn stall(&mut self) {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        std::thread::sleep(Duration::from_micros(self.state % 3000));
    }
}

impl storage::BlockBackend for SlowBackend {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.stall();
        self.inner.read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.stall();
        self.inner.write(offset, data)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stall();
        self.inner.flush()
    }
}

/// Completions depend only on the guest's requests: the kernel over image files, over memory, and over
/// memory that takes a varying 0-3 ms of host time per operation retires the same instructions, prints
/// the same and ends in the same machine state (so record/replay holds whatever the host disk does).
#[test]
fn mb_disk_completions_do_not_depend_on_host_io_timing() {
    let (dir, ide, sata) = fresh_images("timing");
    let (mut m, out) = machine(&ide, Some(&sata), Accel::Interp);
    let outcome = m.run(Some(500_000_000));
    let file_run =
        (outcome, String::from_utf8_lossy(&out.lock().unwrap()).into_owned(), m.cpu.icount, m.state_hash());
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_passes("mb_disk over files", &file_run.0, &file_run.1);
    for seed in [0u64, 0x9E37_79B9_7F4A_7C15, 12345] {
        let backend = |sectors: u32, salt: u64| -> Box<dyn storage::BlockBackend> {
            let inner = storage::MemBackend::from_bytes(pattern(sectors), false);
            if seed == 0 { Box::new(inner) } else { Box::new(SlowBackend { inner, state: seed ^ salt }) }
        };
        let mut ctl = storage::IdeController::new();
        ctl.attach(0, 0, storage::Drive::disk(backend(IDE_SECTORS, 1), "FERRITE-IDE0"));
        let ahci =
            storage::Ahci::new(vec![Some(storage::Drive::disk(backend(SATA_SECTORS, 2), "FERRITE-SATA0"))]);
        let (mut m, out) = machine_with(ctl, Some(ahci), Accel::Interp);
        let outcome = m.run(Some(500_000_000));
        let run = (
            outcome,
            String::from_utf8_lossy(&out.lock().unwrap()).into_owned(),
            m.cpu.icount,
            m.state_hash(),
        );
        assert_eq!(run, file_run, "backend seed {seed:#x}: outcome, output, instructions, state hash");
    }
}
