//! Linux booted the way a PC boots it: Debian's SeaBIOS (the machine's `--bios`) loads a boot loader from
//! a disk or CD image that the test makes and installs the boot loader on, the boot loader loads
//! Debian's cloud kernel and the guest-image initramfs from the image's file system, and the test types a
//! command at the shell.
//!
//! - IDE disk: an MBR image (SYSLINUX's `mbr.bin`, one active FAT16 partition at 1 MiB) formatted with
//!   `mformat`, SYSLINUX installed into it by Debian's mtools-based installer (`syslinux --install
//!   --offset`), the kernel, initramfs and `syslinux.cfg` copied in with `mcopy`: nothing is mounted.
//! - ATAPI CD: an El Torito ISO made with `genisoimage` holding ISOLINUX (`isolinux.bin` with its boot
//!   information table, `ldlinux.c32`), the kernel and the initramfs.
//!
//! SYSLINUX adds `BOOT_IMAGE=<kernel path>` in front of the command line it hands over, so the guest's
//! `/proc/cmdline` proves which loader booted it from which medium. The boot loaders, mtools and
//! genisoimage come from Debian (fetched by `ferrite images --syslinux` into the image cache; mtools and
//! genisoimage installed by scripts/setup.sh); without them the test fails and says why.
//!
//! memtest86+ (Debian's package, its own El Torito image) runs from the CD until its screen shows test
//! #3, with no errors.
//!
//! Only the JIT runs these boots: the interpreter boots the same firmware and boot sectors in
//! `bios_boot.rs`, and a whole Linux boot under the interpreter would add minutes to CI for no path the
//! JIT does not take (the engines' equivalence is tested instruction by instruction elsewhere).

use machine::{Accel, BiosConfig, HostEvent, LinuxBoot, Machine, MachineConfig, RunOutcome};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MARKER: &str = "FERRITE-READY";
const PROMPT: &str = "/ # ";
/// The kernel command line the boot loaders hand over (the CI line of the direct boot tests), with a
/// token of our own to find in `/proc/cmdline`.
const APPEND: &str = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable ferrite.loader=";
const MAX_INSTRUCTIONS: u64 = 40_000_000_000;
/// Host-time budget: generous for a 2-core CI machine shared with builds.
const MAX_WALL: Duration = Duration::from_secs(1800);

/// Runs `ferrite images ARGS` and returns its `key=value` lines, or panics saying what is missing.
fn ferrite_images(args: &[&str]) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .arg("images")
        .args(args)
        .output()
        .expect("run ferrite images");
    assert!(
        out.status.success(),
        "`ferrite images {}` failed, so nothing was booted: {}\nIt needs apt-get with Debian's package \
         lists (scripts/setup.sh) and Debian's mirrors.",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn field(lines: &[(String, String)], key: &str) -> PathBuf {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| panic!("`ferrite images` printed no {key}=: {lines:?}"))
}

/// Every file the boots need.
struct Files {
    kernel: PathBuf,
    initrd: PathBuf,
    bios: Vec<u8>,
    vgabios: Vec<u8>,
    installer: PathBuf,
    mbr: PathBuf,
    isolinux: PathBuf,
    ldlinux_c32: PathBuf,
}

fn files() -> &'static Files {
    static ONCE: std::sync::OnceLock<Files> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let guest = ferrite_images(&[]);
        let sea = ferrite_images(&["--seabios"]);
        let sys = ferrite_images(&["--syslinux"]);
        Files {
            kernel: field(&guest, "kernel"),
            initrd: field(&guest, "initrd"),
            bios: std::fs::read(field(&sea, "bios")).unwrap(),
            vgabios: std::fs::read(field(&sea, "vgabios")).unwrap(),
            installer: field(&sys, "installer"),
            mbr: field(&sys, "mbr"),
            isolinux: field(&sys, "isolinux"),
            ldlinux_c32: field(&sys, "ldlinux_c32"),
        }
    })
}

/// Runs a host tool and panics with its output (and the package that has it) when it fails.
fn must(cmd: &mut Command, package: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {:?} ({e}): install {package} (scripts/setup.sh does)", cmd.get_program())
    });
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh directory for one test.
fn workdir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bios-linux-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn syslinux_cfg(kernel: &str, initrd: &str, loader: &str) -> String {
    format!(
        "DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  LINUX {kernel}\n  INITRD {initrd}\n  APPEND \
         {APPEND}{loader}\n"
    )
}

/// Sectors before the partition (1 MiB, as partitioning tools align).
const PART_START: u64 = 2048;

/// The MBR: SYSLINUX's boot code, one active FAT16 (LBA) partition from [`PART_START`] to the end of a
/// disk of `sectors`, the 55 AA signature.
fn mbr(code: &[u8], sectors: u64) -> [u8; 512] {
    assert!(code.len() >= 440, "mbr.bin is {} bytes", code.len());
    let mut s = [0u8; 512];
    s[..440].copy_from_slice(&code[..440]);
    let e = &mut s[446..462];
    e[0] = 0x80; // active
    e[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]); // CHS beyond 8 GiB: boot code uses the LBA fields
    e[4] = 0x0E; // FAT16, LBA
    e[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&(PART_START as u32).to_le_bytes());
    e[12..16].copy_from_slice(&((sectors - PART_START) as u32).to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// The IDE disk: MBR, FAT16 partition with SYSLINUX, the kernel, the initramfs and `syslinux.cfg`.
fn syslinux_disk(dir: &Path) -> PathBuf {
    let f = files();
    let payload = std::fs::metadata(&f.kernel).unwrap().len() + std::fs::metadata(&f.initrd).unwrap().len();
    let mib = payload.div_ceil(1 << 20) + 4; // FATs, root directory, ldlinux.*, the MBR gap
    let sectors = mib * 2048;
    let img = dir.join("disk.img");
    let file = std::fs::File::create(&img).unwrap();
    file.set_len(sectors * 512).unwrap();
    drop(file);
    let mut head = std::fs::read(&img).unwrap();
    head[..512].copy_from_slice(&mbr(&std::fs::read(&f.mbr).unwrap(), sectors));
    std::fs::write(&img, head).unwrap();
    let part = format!("{}@@{}", img.display(), PART_START * 512);
    // FAT16 with the partition's place in the BPB's hidden-sector count, as a partitioned disk has it.
    must(
        Command::new("mformat").args([
            "-i",
            &part,
            "-T",
            &(sectors - PART_START).to_string(),
            "-H",
            &PART_START.to_string(),
            "-h",
            "16",
            "-s",
            "63",
            "-v",
            "FERRITE",
            "::",
        ]),
        "mtools",
    );
    must(
        Command::new(&f.installer).args(["--install", "--offset", &(PART_START * 512).to_string()]).arg(&img),
        "syslinux (ferrite images --syslinux) and mtools",
    );
    let cfg = dir.join("syslinux.cfg");
    std::fs::write(&cfg, syslinux_cfg("/vmlinuz", "/initrd.img", "syslinux-ide")).unwrap();
    for (host, name) in [(&f.kernel, "::vmlinuz"), (&f.initrd, "::initrd.img"), (&cfg, "::syslinux.cfg")] {
        must(Command::new("mcopy").args(["-i", &part]).arg(host).arg(name), "mtools");
    }
    img
}

/// The CD: ISOLINUX on El Torito (no emulation, 4 sectors loaded, boot information table), the kernel
/// and initramfs beside it.
fn isolinux_iso(dir: &Path) -> PathBuf {
    let f = files();
    let root = dir.join("cdroot");
    let iso_dir = root.join("isolinux");
    std::fs::create_dir_all(&iso_dir).unwrap();
    std::fs::copy(&f.isolinux, iso_dir.join("isolinux.bin")).unwrap();
    std::fs::copy(&f.ldlinux_c32, iso_dir.join("ldlinux.c32")).unwrap();
    std::fs::copy(&f.kernel, iso_dir.join("vmlinuz")).unwrap();
    std::fs::copy(&f.initrd, iso_dir.join("initrd.img")).unwrap();
    std::fs::write(
        iso_dir.join("isolinux.cfg"),
        syslinux_cfg("/isolinux/vmlinuz", "/isolinux/initrd.img", "isolinux-cd"),
    )
    .unwrap();
    let iso = dir.join("cd.iso");
    must(
        Command::new("genisoimage")
            .args(["-quiet", "-V", "FERRITE", "-r", "-J", "-o"])
            .arg(&iso)
            .args([
                "-b",
                "isolinux/isolinux.bin",
                "-c",
                "isolinux/boot.cat",
                "-no-emul-boot",
                "-boot-load-size",
                "4",
                "-boot-info-table",
            ])
            .arg(&root),
        "genisoimage",
    );
    let _ = std::fs::remove_dir_all(&root);
    iso
}

/// A machine on SeaBIOS with COM1 captured and console input attached.
struct Session {
    m: Machine,
    out: Arc<Mutex<Vec<u8>>>,
    tx: std::sync::mpsc::Sender<HostEvent>,
    seen: usize,
    start: Instant,
}

impl Session {
    fn new(specs: &[storage::config::DiskSpec], order: [u8; 3], accel: Accel) -> Session {
        Session::build(specs, order, accel, None, 256 << 20)
    }

    /// With `kernel`, the machine hands it to the BIOS through fw_cfg (`--kernel` with `--bios`).
    fn build(
        specs: &[storage::config::DiskSpec],
        order: [u8; 3],
        accel: Accel,
        kernel: Option<LinuxBoot>,
        memory: u64,
    ) -> Session {
        let f = files();
        let mut cfg = MachineConfig::new(memory, f.bios.clone());
        cfg.accel = accel;
        cfg.linux = kernel;
        cfg.bios = Some(BiosConfig {
            files: vec![(machine::VGA_ROM_FILE.to_string(), f.vgabios.clone())],
            boot_order: order,
            ..Default::default()
        });
        cfg.devices.push(machine::DeviceSpec::named("vga").unwrap());
        let disks = storage::config::build(specs).expect("open the images");
        cfg.ide = Some(disks.ide);
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        cfg.com1 = Box::new(move |b| o2.lock().unwrap().push(b));
        let mut m = Machine::new(cfg).expect("machine");
        let (tx, rx) = std::sync::mpsc::channel();
        m.attach_input(rx);
        Session { m, out, tx, seen: 0, start: Instant::now() }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// The VGA text screen as the device shows it (the boot loader's messages).
    fn screen(&self) -> String {
        match self.m.vga().and_then(|v| v.text_screen()) {
            Some(t) => (0..t.rows).map(|r| t.row_text(r).trim_end().to_string() + "\n").collect(),
            None => "(not in a text mode)".into(),
        }
    }

    fn wait_for(&mut self, pat: &str) -> String {
        loop {
            {
                let out = self.out.lock().unwrap();
                let tail = String::from_utf8_lossy(&out[self.seen..]).into_owned();
                if let Some(i) = tail.find(pat) {
                    self.seen += i + pat.len();
                    return tail[..i + pat.len()].to_string();
                }
            }
            assert!(
                self.start.elapsed() < MAX_WALL && self.m.cpu.icount < MAX_INSTRUCTIONS,
                "no {pat:?} after {:?} ({} instructions); console:\n{}\nscreen:\n{}",
                self.start.elapsed(),
                self.m.cpu.icount,
                self.text(),
                self.screen()
            );
            let limit = self.m.cpu.icount + 50_000_000;
            match self.m.run(Some(limit)) {
                RunOutcome::InstructionLimit => {}
                other => panic!(
                    "the machine stopped waiting for {pat:?}: {other:?}\nconsole:\n{}\nscreen:\n{}",
                    self.text(),
                    self.screen()
                ),
            }
        }
    }

    fn command(&mut self, cmd: &str) -> String {
        let (a, b) = ("END-OF", "-COMMAND");
        for byte in format!("{cmd}; echo {a}''{b}\n").bytes() {
            self.tx.send(HostEvent::Input(byte)).unwrap();
        }
        let out = self.wait_for(&format!("{a}{b}"));
        self.wait_for(PROMPT);
        out
    }
}

/// Boots `specs` to the shell and checks `/proc/cmdline` names `kernel_path` and `loader`.
fn boot_to_shell(specs: &[storage::config::DiskSpec], order: [u8; 3], kernel_path: &str, loader: &str) {
    let mut s = Session::new(specs, order, Accel::Jit);
    s.wait_for(MARKER);
    s.wait_for(PROMPT);
    let shell_at = (s.m.cpu.icount, s.start.elapsed());
    let got = s.command("cat /proc/cmdline; echo sum=$((6*7))");
    assert!(
        got.contains(&format!("BOOT_IMAGE={kernel_path} {APPEND}{loader}")),
        "the command line SYSLINUX handed over:\n{got}"
    );
    assert!(got.contains("sum=42"), "the shell ran the command:\n{got}");
    // What SeaBIOS and the boot loader showed on the VGA text screen before Linux took over (the
    // kernel's console is the serial port, so the screen keeps them).
    let screen = s.screen();
    assert!(screen.contains("SeaBIOS (version"), "{screen}");
    assert!(screen.contains("LINUX 6.04"), "the boot loader's banner is on the screen:\n{screen}");
    println!(
        "{loader} under jit: shell after {} instructions, {:.1} s host time",
        shell_at.0,
        shell_at.1.as_secs_f64()
    );
}

#[test]
fn linux_boots_through_seabios_and_syslinux_from_an_ide_disk() {
    let dir = workdir("ide");
    let disk = syslinux_disk(&dir);
    let specs = [storage::config::DiskSpec::shorthand(&disk, 0)];
    boot_to_shell(&specs, machine::parse_boot_order("c").unwrap(), "/vmlinuz", "syslinux-ide");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linux_boots_through_seabios_and_isolinux_from_an_atapi_cd() {
    let dir = workdir("cd");
    let iso = isolinux_iso(&dir);
    let specs = [storage::config::DiskSpec::shorthand(&iso, 2)];
    boot_to_shell(&specs, machine::parse_boot_order("d").unwrap(), "/isolinux/vmlinuz", "isolinux-cd");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--kernel/--initrd/--append` with a BIOS: SeaBIOS runs the machine's linuxboot option ROM (first in
/// the `bootorder` the machine adds), which copies the kernel, initrd and command line out of fw_cfg and
/// enters the kernel's real-mode setup code; no disk at all.
#[test]
fn seabios_boots_the_fw_cfg_kernel_through_the_linuxboot_option_rom() {
    let f = files();
    let kernel = LinuxBoot {
        kernel: std::fs::read(&f.kernel).unwrap(),
        initrd: Some(std::fs::read(&f.initrd).unwrap()),
        cmdline: format!("{APPEND}linuxboot"),
        ..Default::default()
    };
    let mut s = Session::build(&[], [2, 3, 1], Accel::Jit, Some(kernel), 256 << 20);
    s.wait_for(MARKER);
    s.wait_for(PROMPT);
    let got = s.command("cat /proc/cmdline; echo sum=$((6*7))");
    // The command line exactly as given: no boot loader put a BOOT_IMAGE= in front.
    let want = format!("{APPEND}linuxboot");
    assert!(got.lines().any(|l| l.trim_end() == want), "the command line as given:\n{got}");
    assert!(got.contains("sum=42"), "{got}");
    let screen = s.screen();
    assert!(screen.contains("SeaBIOS (version"), "{screen}");
    assert!(screen.contains("Booting from ROM"), "SeaBIOS booted the option ROM:\n{screen}");
    println!(
        "linuxboot under jit: shell after {} instructions, {:.1} s",
        s.m.cpu.icount,
        s.start.elapsed().as_secs_f64()
    );
}

/// What memtest86+ shows on its screen: the test running, the pass count and the error count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct MemtestStatus {
    test: Option<u32>,
    pass: Option<u32>,
    errors: Option<u32>,
}

/// The number after `key` on the screen (`Test #3`, `Pass:  0`, `Errors: 0`).
fn number_after(screen: &str, key: &str) -> Option<u32> {
    let rest = &screen[screen.find(key)? + key.len()..];
    let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn memtest_status(screen: &str) -> MemtestStatus {
    MemtestStatus {
        test: number_after(screen, "Test #"),
        pass: number_after(screen, "Pass:"),
        errors: number_after(screen, "Errors:"),
    }
}

/// Debian's memtest86+ (its own El Torito CD image) booted by SeaBIOS from the ATAPI CD under the JIT
/// with 64 MiB of RAM: the test reads its VGA text screen every 50M instructions and requires it to
/// move from test to test into #3 with the error count at 0 all along. With `FERRITE_MEMTEST_PASS=1`
/// it runs on until the first pass (tests #0-#9) is complete and prints the time each test started
/// (the figure in docs/PERF.md).
#[test]
fn memtest86plus_runs_its_first_tests_without_errors() {
    let m = ferrite_images(&["--memtest"]);
    let iso = field(&m, "iso");
    let whole_pass = std::env::var("FERRITE_MEMTEST_PASS").is_ok_and(|v| v == "1");
    let specs = [storage::config::DiskSpec::shorthand(&iso, 2)];
    let mut s = Session::build(&specs, machine::parse_boot_order("d").unwrap(), Accel::Jit, None, 64 << 20);
    let mut last;
    let mut started: Vec<(u32, f64, u64)> = Vec::new();
    let budget = if whole_pass { Duration::from_secs(3600) } else { Duration::from_secs(900) };
    loop {
        match s.m.run(Some(s.m.cpu.icount + 50_000_000)) {
            RunOutcome::InstructionLimit => {}
            other => panic!("memtest86+ stopped the machine: {other:?}\nscreen:\n{}", s.screen()),
        }
        let screen = s.screen();
        let st = memtest_status(&screen);
        if st.errors.is_some() || st.test.is_some() {
            assert!(screen.contains("Memtest86+ v6"), "{screen}");
            assert_eq!(st.errors, Some(0), "memtest86+ found errors:\n{screen}");
        }
        if let Some(t) = st.test
            && started.last().map(|l| l.0) != Some(t)
        {
            started.push((t, s.start.elapsed().as_secs_f64(), s.m.cpu.icount));
        }
        last = st;
        let done = if whole_pass { st.pass.is_some_and(|p| p >= 1) } else { st.test.is_some_and(|t| t >= 3) };
        if done {
            break;
        }
        assert!(
            s.start.elapsed() < budget,
            "memtest86+ made too little progress in {budget:?}: {last:?}, tests started {started:?}\nscreen:\n{screen}"
        );
    }
    for (t, secs, icount) in &started {
        println!("memtest86+ test #{t} started at {secs:.1} s host time, {icount} instructions");
    }
    println!(
        "memtest86+ under jit: {} after {:.1} s host time, {} instructions; screen:\n{}",
        if whole_pass { "pass 1 complete" } else { "test #3 reached" },
        s.start.elapsed().as_secs_f64(),
        s.m.cpu.icount,
        s.screen()
    );
    // The screen moved from test to test (a fast test can start and end between two looks).
    let order: Vec<u32> = started.iter().map(|x| x.0).collect();
    assert!(order.len() >= 2, "the screen showed one test only: {order:?}");
    assert_eq!(last.errors, Some(0));
}
