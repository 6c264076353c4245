//! Debian's generic kernel (`linux-image-amd64`, whose `ata_piix`, `ahci`, `sd_mod`, `sr_mod`, `isofs`
//! and `ext4` are modules that `ferrite images --module` puts in the initramfs) on disks made by the
//! test, one boot checking everything:
//!
//! - IDE primary master: a raw ext4 image; IDE primary slave: a qcow2 overlay over a raw ext4 base;
//!   IDE secondary master: an ISO 9660 CD-ROM (genisoimage) on ATAPI;
//! - AHCI port 0: a raw ext4 image; AHCI port 1: a qcow2 overlay over a raw ext4 base.
//!
//! The guest finds each file system by label, checks it hangs off the right controller (the PIIX3 IDE
//! function 00:01.1 or the AHCI function 00:05.0 in its sysfs path), mounts it, reads the file mkfs put
//! there, writes files, syncs and unmounts; it mounts the CD and reads a known file back (its SHA-256);
//! then it powers off. The host then reads the guest's files with `debugfs` and runs `e2fsck -fn` (clean)
//! on every image (a qcow2 through `qemu-img convert`, after `qemu-img check`), and checks each base
//! image is byte for byte what it was.
//!
//! `durability_*` kill Ferrite with SIGKILL: what the guest synced is in the image; unsynced direct
//! writes in flight leave a qcow2 `qemu-img check` finds clean.
//!
//! Tools: mkfs.ext4/debugfs/e2fsck (e2fsprogs), genisoimage, qemu-img (scripts/setup.sh installs them).
//! The test fails, saying why, when they or the images are missing: it never passes without booting.

use machine::{Accel, HostEvent, LinuxBoot, Machine, MachineConfig, RunOutcome};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CMDLINE: &str = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable";
const MARKER: &str = "FERRITE-READY";
const PROMPT: &str = "/ # ";
const MAX_INSTRUCTIONS: u64 = 60_000_000_000;
/// Host-time budget: generous, for a 2-core CI machine shared with builds (the interpreter boot of the
/// generic kernel retires about 7G instructions).
const MAX_WALL: Duration = Duration::from_secs(3600);
/// The generic kernel's modules for the disks (their dependencies come along).
const MODULES: &[&str] = &["ata_piix", "ahci", "sd_mod", "sr_mod", "isofs", "crc32c_generic", "ext4"];
/// Lines of `seq 1 SEQ` the guest writes to each file system.
const SEQ: u32 = 30000;

struct Images {
    kernel: PathBuf,
    initrd: PathBuf,
}

/// The generic kernel's images, made once per test process.
fn images() -> &'static Images {
    static ONCE: std::sync::OnceLock<Images> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrite"));
        cmd.args(["images", "--package", "linux-image-amd64"]);
        for m in MODULES {
            cmd.args(["--module", m]);
        }
        let out = cmd.output().expect("run ferrite images");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the generic kernel's images could not be made, so Linux was not booted.\n`ferrite images` \
             said: {}\nIt needs apt-get with Debian's package lists (scripts/setup.sh) and Debian's mirrors.",
            String::from_utf8_lossy(&out.stderr)
        );
        let field = |k: &str| -> PathBuf {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("`ferrite images` printed no {k}=: {stdout}"))
                .into()
        };
        Images { kernel: field("kernel"), initrd: field("initrd") }
    })
}

/// A command for an e2fsprogs tool: on PATH, or in /usr/sbin or /sbin (not on a normal user's PATH on
/// Debian).
fn e2(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists());
    Command::new(found.unwrap_or_else(|| PathBuf::from(name)))
}

/// Runs a host tool; panics with its output (and the package that has it) when it fails to start.
fn tool(cmd: &mut Command, package: &str) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {:?} ({e}): install {package} (scripts/setup.sh does)", cmd.get_program())
    })
}

fn must(cmd: &mut Command, package: &str) -> String {
    let out = tool(cmd, package);
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh directory for one test.
fn workdir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("linux-disks-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 32 MiB raw ext4 image labelled `label`, holding `/seed.txt` = "seed of LABEL\n".
fn make_ext4(dir: &Path, name: &str, label: &str) -> PathBuf {
    let seed = dir.join(format!("seed-{label}"));
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("seed.txt"), format!("seed of {label}\n")).unwrap();
    let img = dir.join(name);
    std::fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    must(e2("mkfs.ext4").args(["-q", "-F", "-L", label, "-d"]).arg(&seed).arg(&img), "e2fsprogs");
    img
}

/// A qcow2 overlay `name` over the raw `base`.
fn make_overlay(dir: &Path, name: &str, base: &Path) -> PathBuf {
    let ov = dir.join(name);
    must(
        Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"]).arg(base).arg(&ov),
        "qemu-utils",
    );
    ov
}

/// The CD's known file: 300 KiB of a fixed byte sequence.
fn cd_data() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn sha256_hex(path: &Path) -> String {
    let out = must(Command::new("sha256sum").arg(path), "coreutils");
    out.split_whitespace().next().unwrap_or_default().to_string()
}

fn make_iso(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("cdroot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "hello from the CD\n").unwrap();
    std::fs::write(root.join("data.bin"), cd_data()).unwrap();
    let iso = dir.join("cd.iso");
    must(
        Command::new("genisoimage").args(["-quiet", "-V", "FERRITECD", "-r", "-o"]).arg(&iso).arg(&root),
        "genisoimage",
    );
    (iso, sha256_hex(&root.join("data.bin")))
}

/// A raw copy of any image (a qcow2 is converted, after `qemu-img check` says it is clean).
fn flat(img: &Path) -> PathBuf {
    if img.extension().is_some_and(|e| e == "qcow2") {
        let out = tool(Command::new("qemu-img").args(["check", "-q"]).arg(img), "qemu-utils");
        assert!(out.status.success(), "qemu-img check {}: {out:?}", img.display());
        let raw = img.with_extension("flat");
        must(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(img).arg(&raw), "qemu-utils");
        raw
    } else {
        img.to_path_buf()
    }
}

/// `debugfs -R "cat PATH"` of a raw ext4 image.
fn debugfs_cat(raw: &Path, path: &str) -> String {
    must(e2("debugfs").args(["-R", &format!("cat {path}")]).arg(raw), "e2fsprogs")
}

fn e2fsck_clean(raw: &Path) {
    let out = tool(e2("e2fsck").args(["-fn"]).arg(raw), "e2fsprogs");
    assert!(
        out.status.success(),
        "e2fsck -fn {} is not clean: {}{}",
        raw.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn seq_text(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

struct Session {
    m: Machine,
    out: Arc<Mutex<Vec<u8>>>,
    tx: std::sync::mpsc::Sender<HostEvent>,
    seen: usize,
    start: Instant,
    exit: Option<i32>,
}

impl Session {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
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
            if self.exit.is_some() {
                panic!("the guest exited while waiting for {pat:?}; console:\n{}", self.text());
            }
            assert!(
                self.start.elapsed() < MAX_WALL,
                "no {pat:?} after {:?} ({} instructions); console:\n{}",
                self.start.elapsed(),
                self.m.cpu.icount,
                self.text()
            );
            let limit = (self.m.cpu.icount + 50_000_000).min(MAX_INSTRUCTIONS);
            match self.m.run(Some(limit)) {
                RunOutcome::InstructionLimit if self.m.cpu.icount >= MAX_INSTRUCTIONS => {
                    panic!("instruction budget spent waiting for {pat:?}; console:\n{}", self.text())
                }
                RunOutcome::InstructionLimit => {}
                RunOutcome::Exited(c) => self.exit = Some(c),
                other => panic!("machine stopped waiting for {pat:?}: {other:?}\nconsole:\n{}", self.text()),
            }
        }
    }

    fn command(&mut self, cmd: &str, n: usize) -> String {
        let end = format!("END-{n}-OF-COMMAND");
        let (a, b) = end.split_at(4);
        for byte in format!("{cmd}; echo {a}''{b}\n").bytes() {
            self.tx.send(HostEvent::Input(byte)).unwrap();
        }
        let out = self.wait_for(&end);
        self.wait_for(PROMPT);
        out
    }

    fn poweroff(&mut self) {
        for byte in b"poweroff\n" {
            self.tx.send(HostEvent::Input(*byte)).unwrap();
        }
        while self.exit.is_none() {
            match self.m.run(Some(self.m.cpu.icount + 50_000_000)) {
                RunOutcome::Exited(c) => self.exit = Some(c),
                RunOutcome::InstructionLimit if self.m.cpu.icount < MAX_INSTRUCTIONS => {}
                other => panic!("no power-off: {other:?}\nconsole:\n{}", self.text()),
            }
        }
        assert_eq!(self.exit, Some(0), "poweroff ends the machine with status 0; console:\n{}", self.text());
    }
}

/// One ext4 disk of the test: its label, image, controller (PCI function in the sysfs path) and, for
/// an overlay, its raw base and the base's bytes before the boot.
struct Ext4Disk {
    label: &'static str,
    image: PathBuf,
    function: &'static str,
    base: Option<(PathBuf, Vec<u8>)>,
}

/// The guest's commands for one ext4 disk: find, check the controller, mount, read, write, sync, unmount.
fn guest_ext4(label: &str) -> String {
    format!(
        "d=$(findfs LABEL={label}) && readlink -f /sys/class/block/${{d#/dev/}} && mkdir -p /mnt/{label} && \
         mount -t ext4 $d /mnt/{label} && cat /mnt/{label}/seed.txt && echo \"guest wrote {label}\" > \
         /mnt/{label}/guest.txt && seq 1 {SEQ} > /mnt/{label}/seq.txt && mkdir /mnt/{label}/dir && cp \
         /mnt/{label}/seq.txt /mnt/{label}/dir/copy.txt && sync && umount /mnt/{label} && echo MOUNTED-{label}-OK"
    )
}

fn check_ext4_on_host(d: &Ext4Disk) {
    let raw = flat(&d.image);
    e2fsck_clean(&raw);
    assert_eq!(debugfs_cat(&raw, "/seed.txt"), format!("seed of {}\n", d.label));
    assert_eq!(debugfs_cat(&raw, "/guest.txt"), format!("guest wrote {}\n", d.label), "{}", d.label);
    let want = seq_text(SEQ);
    assert!(debugfs_cat(&raw, "/seq.txt") == want, "{}: /seq.txt differs", d.label);
    assert!(debugfs_cat(&raw, "/dir/copy.txt") == want, "{}: /dir/copy.txt differs", d.label);
    if let Some((base, before)) = &d.base {
        assert!(std::fs::read(base).unwrap() == *before, "{}: the base image changed", d.label);
        // And the base alone is still the file system mkfs made: no guest file in it.
        e2fsck_clean(base);
        let out = tool(e2("debugfs").args(["-R", "stat /guest.txt"]).arg(base), "e2fsprogs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("File not found"), "{}: the base has the guest's file: {text}", d.label);
    }
    println!("{}: e2fsck -fn clean, the guest's files read back with debugfs", d.label);
}

fn boot_with_disks(accel: Accel, overlays: bool) {
    let imgs = images();
    let dir = workdir(&format!("{accel:?}"));
    let mut disks = vec![
        Ext4Disk {
            label: "fide",
            image: make_ext4(&dir, "ide.img", "fide"),
            function: "0000:00:01.1",
            base: None,
        },
        Ext4Disk {
            label: "fsata",
            image: make_ext4(&dir, "sata.img", "fsata"),
            function: "0000:00:05.0",
            base: None,
        },
    ];
    if overlays {
        for (label, name, function) in
            [("fideq", "ide-base.raw", "0000:00:01.1"), ("fsataq", "sata-base.raw", "0000:00:05.0")]
        {
            let base = make_ext4(&dir, name, label);
            let before = std::fs::read(&base).unwrap();
            let image = make_overlay(&dir, &format!("{label}.qcow2"), &base);
            disks.push(Ext4Disk { label, image, function, base: Some((base, before)) });
        }
    }
    let (iso, cd_sha) = make_iso(&dir);

    let mut specs = vec![
        storage::config::DiskSpec::shorthand(&disks[0].image, 0),
        storage::config::DiskSpec::shorthand(&iso, 2),
        storage::config::DiskSpec::parse(&format!("{},if=ahci", disks[1].image.display())).unwrap(),
    ];
    if overlays {
        specs.push(storage::config::DiskSpec::shorthand(&disks[2].image, 1));
        specs.push(
            storage::config::DiskSpec::parse(&format!("{},if=ahci", disks[3].image.display())).unwrap(),
        );
    }
    let controllers = storage::config::build(&specs).expect("open the images");

    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(512 << 20, Vec::new());
    cfg.accel = accel;
    cfg.com1 = Box::new(move |b| o2.lock().unwrap().push(b));
    cfg.ide = Some(controllers.ide);
    if let Some(ahci) = controllers.ahci {
        cfg.devices
            .push(machine::DeviceSpec::Pci { devfn: storage::config::AHCI_DEVFN, function: Box::new(ahci) });
    }
    cfg.linux = Some(LinuxBoot {
        kernel: std::fs::read(&imgs.kernel).unwrap(),
        initrd: Some(std::fs::read(&imgs.initrd).unwrap()),
        cmdline: CMDLINE.into(),
        ..Default::default()
    });
    let mut m = Machine::new(cfg).expect("machine");
    let (tx, rx) = std::sync::mpsc::channel();
    m.attach_input(rx);
    let mut s = Session { m, out, tx, seen: 0, start: Instant::now(), exit: None };
    s.wait_for(MARKER);
    s.wait_for(PROMPT);
    println!(
        "generic kernel under {accel:?}: shell after {} instructions, {:?}",
        s.m.cpu.icount,
        s.start.elapsed()
    );

    let mut n = 0;
    for d in &disks {
        n += 1;
        let got = s.command(&guest_ext4(d.label), n);
        assert!(got.contains(&format!("MOUNTED-{}-OK", d.label)), "{}: guest output:\n{got}", d.label);
        assert!(got.contains(&format!("seed of {}", d.label)), "{}: guest output:\n{got}", d.label);
        assert!(got.contains(d.function), "{} is not behind {}:\n{got}", d.label, d.function);
    }
    let cd = s.command(
        "readlink -f /sys/class/block/sr0 && mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd && \
         cat /mnt/cd/hello.txt && sha256sum /mnt/cd/data.bin && umount /mnt/cd",
        100,
    );
    assert!(cd.contains("0000:00:01.1"), "sr0 is not behind the IDE function:\n{cd}");
    assert!(cd.contains("hello from the CD"), "the CD's hello.txt:\n{cd}");
    assert!(cd.contains(&format!("{cd_sha}  /mnt/cd/data.bin")), "the CD's data.bin (want {cd_sha}):\n{cd}");
    s.poweroff();
    let log = s.text();
    println!(
        "session under {accel:?}: {} instructions, {:.1} s host time",
        s.m.cpu.icount,
        s.start.elapsed().as_secs_f64()
    );
    drop(s); // closes and flushes the images
    for bad in ["I/O error", "EXT4-fs error", "Buffer I/O", "failed command", "exception Emask", "WARNING"] {
        assert!(!log.contains(bad), "kernel log contains {bad:?}:\n{log}");
    }
    for d in &disks {
        check_ext4_on_host(d);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole set (raw and qcow2-overlay ext4 on IDE and AHCI, the ISO on ATAPI) under the JIT.
#[test]
fn linux_ext4_and_iso_on_ide_and_ahci_under_jit() {
    boot_with_disks(Accel::Jit, true);
}

/// Raw ext4 on IDE and AHCI and the ISO under the interpreter (the overlays are the backend's business,
/// the same under every engine, and the JIT test has them).
#[test]
fn linux_ext4_and_iso_on_ide_and_ahci_under_interp() {
    boot_with_disks(Accel::Interp, false);
}

/// Runs `ferrite run` with `disk` (a `--disk` value), types `setup` once the shell is up, waits for
/// `marker`, then for `settle` more host time, and SIGKILLs Ferrite. Returns the console output.
fn run_and_kill(disk: &str, setup: &str, marker: &str, settle: Duration) -> String {
    let imgs = images();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--accel", "jit", "--memory", "512M", "--kernel"])
        .arg(&imgs.kernel)
        .arg("--initrd")
        .arg(&imgs.initrd)
        .args(["--append", CMDLINE, "--disk", disk])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrite");
    let mut stdout = child.stdout.take().unwrap();
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let b2 = buf.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b2.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let start = Instant::now();
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    let wait = |pat: &str, child: &mut std::process::Child| {
        loop {
            let t = text(&buf);
            if t.contains(pat) {
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("ferrite exited ({st}) before {pat:?}:\n{t}");
            }
            if start.elapsed() > MAX_WALL {
                let _ = child.kill();
                panic!("no {pat:?} within {MAX_WALL:?}:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(MARKER, &mut child);
    // Type only once the shell shows its prompt (input sent earlier can be flushed when it opens the tty).
    loop {
        if text(&buf).split(MARKER).nth(1).is_some_and(|rest| rest.contains(PROMPT)) {
            break;
        }
        wait(MARKER, &mut child);
        std::thread::sleep(Duration::from_millis(50));
    }
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(setup.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }
    wait(marker, &mut child);
    std::thread::sleep(settle);
    // SIGKILL: no destructor, no flush, no exit path runs.
    child.kill().expect("SIGKILL ferrite");
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "ferrite ended by SIGKILL");
    reader.join().unwrap();
    text(&buf)
}

/// The guest writes a file and syncs; SIGKILL right after the sync returned: the file is in the qcow2
/// image (after the journal replay any host would do on mount: `e2fsck -fy` on a converted copy),
/// and the qcow2 is consistent.
#[test]
fn durability_synced_data_survives_sigkill() {
    let dir = workdir("durable-sync");
    let raw = make_ext4(&dir, "fs.raw", "fdur");
    let img = dir.join("dur.qcow2");
    must(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&raw).arg(&img), "qemu-utils");
    let setup = format!(
        "d=$(findfs LABEL=fdur) && mkdir -p /mnt/d && mount -t ext4 $d /mnt/d && seq 1 {SEQ} > \
         /mnt/d/synced.txt && echo durable > /mnt/d/small.txt && sync && echo SYN''CED-NOW"
    );
    let console = run_and_kill(&format!("{},if=ahci", img.display()), &setup, "SYNCED-NOW", Duration::ZERO);
    assert!(console.contains("SYNCED-NOW"), "{console}");
    let copy = flat(&img);
    // Replay the journal as a mount would (the file system was mounted when Ferrite died).
    let out = tool(e2("e2fsck").args(["-fy"]).arg(&copy), "e2fsprogs");
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "e2fsck -fy after the kill: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(debugfs_cat(&copy, "/small.txt"), "durable\n");
    assert!(debugfs_cat(&copy, "/synced.txt") == seq_text(SEQ), "/synced.txt differs after the kill");
    e2fsck_clean(&copy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guest writes with O_DIRECT (straight to the disk, no sync, no FLUSH) in a loop over a fresh
/// qcow2, allocating clusters all the time; SIGKILL in the middle: `qemu-img check` finds the image
/// clean (no leaked or corrupt clusters).
#[test]
fn durability_unsynced_writes_leave_a_consistent_qcow2() {
    let dir = workdir("durable-nosync");
    let img = dir.join("raw-writes.qcow2");
    must(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&img).arg("256M"), "qemu-utils");
    // 64 KiB direct writes at scattered offsets of the raw device: every one allocates clusters.
    let setup = "i=0; while true; do dd if=/dev/zero of=/dev/sda bs=64k count=1 seek=$(( (i * 37) % 4000 )) \
                 oflag=direct conv=notrunc 2>/dev/null; i=$((i+1)); [ $i = 20 ] && echo WRI''TING; done";
    let console =
        run_and_kill(&format!("{},if=ahci", img.display()), setup, "WRITING", Duration::from_millis(1500));
    assert!(console.contains("WRITING"), "{console}");
    let out = tool(Command::new("qemu-img").args(["check"]).arg(&img), "qemu-utils");
    assert!(
        out.status.success(),
        "qemu-img check after SIGKILL during unsynced writes: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("qemu-img check after the kill: {report}");
    // The guest's writes reached the image before the kill: clusters are allocated.
    let allocated: u64 = report
        .lines()
        .find(|l| l.contains("allocated"))
        .and_then(|l| l.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no allocation count in qemu-img check's report: {report}"));
    assert!(allocated > 0, "no cluster was allocated before the kill: {report}");
    let _ = std::fs::remove_dir_all(&dir);
}
