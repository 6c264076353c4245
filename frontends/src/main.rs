//! `ferrite`: run a PC guest.
//!
//! `ferrite run` with no arguments boots Debian's Linux kernel with a busybox initramfs to a shell on the
//! console (fetching them with `ferrite images` on first use; the built-in demo ROM with `--demo` or when
//! they cannot be had). Exit status: the guest's own status when
//! it exits through the debug-exit port (`(v << 1) | 1`) or powers off (0); 70 when the machine stops
//! (triple fault, unimplemented instruction, halted forever) after a one-line reason and a register
//! dump on stderr; 124 when `--max-instructions` is reached; 2 for bad arguments.

mod console;
mod images;
#[cfg(any(feature = "sdl", test))]
mod keymap;
mod rr;
#[cfg(feature = "sdl")]
mod sdl;

use clap::{Parser, Subcommand, ValueEnum};
use machine::{Machine, MachineConfig, RunOutcome, TripleFaultAction};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ferrite", version, about = "Ferrite: a full-system x86-64 PC emulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a guest (Debian's Linux to a shell when no firmware or kernel is given; see --demo).
    Run(Box<RunArgs>),
    /// Re-execute a recording made with `ferrite run --record FILE` and check it (docs/DEBUGGING.md).
    Replay(rr::ReplayArgs),
    /// Fetch Debian's kernel and busybox-static and build the initramfs for the direct Linux boot; prints
    /// the kernel and initrd paths.
    Images(images::ImagesArgs),
    /// Differential test: random instruction sequences on the host CPU and on Ferrite's engines.
    Difftest(DifftestArgs),
    /// System-level differential test: random privileged programs as ROMs under QEMU TCG and Ferrite.
    DifftestSys(DifftestSysArgs),
}

#[derive(clap::Args)]
struct DifftestSysArgs {
    /// Seed: program i is a pure function of (seed, i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of programs.
    #[arg(long, default_value_t = 50)]
    programs: u64,
    /// Where the generated sources and ROM images are kept (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Directory with the test-ROM include files (common.inc, sys.inc, reset.inc).
    #[arg(long, value_name = "DIR")]
    include_dir: Option<PathBuf>,
    /// Instruction limit for Ferrite per program.
    #[arg(long, default_value_t = 20_000_000)]
    max_instructions: u64,
}

fn difftest_sys(a: DifftestSysArgs) -> ExitCode {
    let mut cfg = difftest::sysrom::SysConfig { seed: a.seed, programs: a.programs, ..Default::default() };
    if let Some(d) = a.work_dir {
        cfg.work_dir = d;
    }
    if let Some(d) = a.include_dir {
        cfg.include_dir = d;
    }
    if let Err(why) = difftest::sysrom::tools_available() {
        println!("ferrite difftest-sys: skipped: {why}");
        return ExitCode::SUCCESS;
    }
    let limit = a.max_instructions;
    let mut ferrite = |rom: &[u8]| -> String {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let o2 = out.clone();
        let mut mc = MachineConfig::new(32 << 20, rom.to_vec());
        mc.debugcon = Box::new(move |b| o2.lock().unwrap_or_else(|e| e.into_inner()).push(b));
        match Machine::new(mc) {
            Ok(mut m) => {
                let _ = m.run(Some(limit));
            }
            Err(e) => return format!("machine error: {e}"),
        }
        String::from_utf8_lossy(&out.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    match difftest::sysrom::run_sys_difftest(&cfg, &mut ferrite) {
        Ok(report) => {
            println!("{report}");
            println!("sources and images in {}", cfg.work_dir.display());
            if report.divergences() == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("ferrite difftest-sys: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(clap::Args)]
struct DifftestArgs {
    /// Seed: the cases are a pure function of (seed, case index, host CPU features).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of cases.
    #[arg(long, default_value_t = 10_000)]
    cases: u64,
    /// Engines, the reference first: native,interp.
    #[arg(long, default_value = "native,interp")]
    engines: String,
    /// Maximum instructions per case.
    #[arg(long, default_value_t = 8)]
    max_insns: usize,
    /// Modes: long64, compat32 or all.
    #[arg(long, default_value = "all")]
    modes: String,
    /// Instruction families (comma-separated, e.g. x87,sse,sse41) or groups: all, int (integer), fp (x87,
    /// MMX, SSE.., AES, PCLMUL), vex (AVX, AVX2, FMA, F16C).
    #[arg(long, default_value = "all")]
    families: String,
    /// How many divergences to print in full.
    #[arg(long, default_value_t = 5)]
    max_reports: usize,
}

fn difftest(a: DifftestArgs) -> ExitCode {
    let families = match difftest::Config::parse_families(&a.families) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ferrite: --families: {e}");
            return ExitCode::from(2);
        }
    };
    let modes = match difftest::Config::parse_modes(&a.modes) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ferrite: --modes: {e}");
            return ExitCode::from(2);
        }
    };
    let mut engines: Vec<Box<dyn difftest::Engine>> = Vec::new();
    for name in a.engines.split(',').map(str::trim) {
        match name {
            "native" => engines.push(Box::new(difftest::NativeEngine::new())),
            "interp" => engines.push(Box::new(difftest::InterpEngine::new())),
            "jit" => engines.push(Box::new(difftest::InterpEngine::jit())),
            other => {
                eprintln!("ferrite: --engines: unknown engine '{other}' (known: native, interp, jit)");
                return ExitCode::from(2);
            }
        }
    }
    if engines.len() < 2 {
        eprintln!(
            "ferrite: --engines needs a reference and at least one engine to compare, e.g. native,interp"
        );
        return ExitCode::from(2);
    }
    let cfg = difftest::Config {
        seed: a.seed,
        cases: a.cases,
        max_insns: a.max_insns.max(1),
        modes,
        families,
        max_reports: a.max_reports,
        ..difftest::Config::default()
    };
    let start = std::time::Instant::now();
    let report = {
        let mut refs: Vec<&mut dyn difftest::Engine> =
            engines.iter_mut().map(|e| -> &mut dyn difftest::Engine { e.as_mut() }).collect();
        difftest::run_difftest(&cfg, &mut refs)
    };
    println!("{report}");
    println!("seed {} cases {} in {:.1} s", a.seed, a.cases, start.elapsed().as_secs_f64());
    if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Accel {
    /// The reference interpreter.
    Interp,
    /// Hardware virtualization through /dev/kvm (time is host time; --max-instructions becomes a host-time
    /// budget of N / --ips seconds).
    Kvm,
    /// The Cranelift JIT: the interpreter with hot blocks translated to host code.
    Jit,
    /// KVM when it runs guests on hardware, else the JIT (says which on stderr).
    Auto,
}

/// What `auto` found out about /dev/kvm.
#[derive(Debug)]
enum KvmFound {
    /// KVM runs guests on hardware, at this calibration speed (MIPS).
    Hardware(f64),
    /// /dev/kvm is not usable, or emulates guests in software: the reason.
    NotUsable(String),
}

/// `auto`'s rule for a run that needs no exact instruction counts: KVM where it runs guests on
/// hardware, else the JIT. Returns the engine and the words that say why.
fn auto_engine(kvm: KvmFound) -> (machine::Accel, String) {
    match kvm {
        KvmFound::Hardware(mips) => (
            machine::Accel::Kvm,
            format!("kvm (/dev/kvm runs guests on hardware: {mips:.0} MIPS in a calibration loop)"),
        ),
        KvmFound::NotUsable(why) => (machine::Accel::Jit, format!("jit ({why})")),
    }
}

/// The first option of the run that needs an instruction-counting engine (interp or jit), if any:
/// `auto` then takes the JIT without probing /dev/kvm, since under KVM time and budgets are host time.
fn needs_counting(args: &RunArgs) -> Option<&'static str> {
    let rr = &args.rr;
    let d = &args.debug;
    [
        (rr.record.is_some(), "--record"),
        (rr.lockstep, "--lockstep"),
        (!rr.snapshot_at.is_empty(), "--snapshot-at"),
        (rr.restore.is_some(), "--restore"),
        (args.max_instructions.is_some(), "--max-instructions"),
        (d.gdb.is_some() || d.gdb_default, "--gdb"),
        (d.monitor.is_some(), "--monitor"),
        (args.screenshot.as_deref().is_some_and(|s| s.contains('@')), "--screenshot at a count"),
    ]
    .into_iter()
    .find_map(|(on, what)| on.then_some(what))
}

/// Resolves `--accel` to an engine. `auto`, also the default when `--accel` is not given, takes the
/// JIT when the run needs exact instruction counts, else probes /dev/kvm (`auto_engine`); given
/// explicitly, it prints one line saying what it chose (the default chooses silently; `--stats` names
/// the engine).
fn choose_accel(a: Option<Accel>, needs_counting: Option<&str>) -> machine::Accel {
    match a {
        Some(Accel::Interp) => machine::Accel::Interp,
        Some(Accel::Kvm) => machine::Accel::Kvm,
        Some(Accel::Jit) => machine::Accel::Jit,
        Some(Accel::Auto) | None => {
            let (engine, why) = match needs_counting {
                Some(what) => {
                    (machine::Accel::Jit, format!("jit ({what} needs an instruction-counting engine)"))
                }
                None => auto_engine(match machine::kvm::probe() {
                    Ok(p) if p.hardware() => KvmFound::Hardware(p.mips),
                    Ok(p) => KvmFound::NotUsable(p.emulated.unwrap_or_default()),
                    Err(e) => KvmFound::NotUsable(format!("/dev/kvm not usable: {e}")),
                }),
            };
            if a.is_some() {
                eprintln!("ferrite: accel auto: {why}");
            }
            engine
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Output {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Discarded.
    None,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Display {
    /// No display.
    None,
    /// The VGA text screen in the terminal.
    Curses,
    /// The VGA screen in an SDL2 window, with keyboard and mouse (the `sdl` cargo feature).
    Sdl,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum OnTripleFault {
    /// Stop with a diagnostic.
    Stop,
    /// Reset the machine.
    Reset,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Flat firmware image, mapped like QEMU's -bios (ending at 4 GiB; its last 128 KiB below 1 MiB).
    #[arg(long, value_name = "FILE")]
    rom: Option<PathBuf>,
    /// A PC BIOS (SeaBIOS's bios.bin) as QEMU's -bios: mapped like --rom, shadowed through the i440FX
    /// PAM registers, with fw_cfg, CMOS and the standard VGA for it. The default for disk and CD boots
    /// (Debian's seabios package, fetched on first use).
    #[arg(long, value_name = "FILE", conflicts_with = "rom")]
    bios: Option<PathBuf>,
    /// The VGA BIOS for --bios, behind the VGA's PCI ROM BAR (default: vgabios-stdvga.bin beside the
    /// BIOS; `--device vga,romfile=FILE` overrides it).
    #[arg(long, value_name = "FILE")]
    vgabios: Option<PathBuf>,
    /// Boot order for the BIOS, as QEMU's -boot: c (hard disk), d (CD-ROM), a, n, or order=dc.
    #[arg(long, value_name = "ORDER", value_parser = machine::parse_boot_order)]
    boot: Option<[u8; 3]>,
    /// Where the BIOS's debug log (port 0x402) goes (default: discarded).
    #[arg(long, value_enum)]
    bios_log: Option<Output>,
    /// Save the VGA screen as a PNG when the run ends, or at instruction COUNT (`FILE.png@COUNT`; the
    /// run goes on). The image depends only on the guest's state, so it is the same in every run.
    #[arg(long, value_name = "FILE.png[@COUNT]")]
    screenshot: Option<String>,
    /// The display, as QEMU names them: `none` (the default), `curses` (the VGA text screen drawn in the
    /// terminal) or `sdl` (an SDL2 window with keyboard and mouse; Ctrl+Alt+G grabs and releases the
    /// mouse, Ctrl+Alt+Q or closing the window quits; needs a build with the `sdl` feature).
    #[arg(long, value_enum, default_value = "none")]
    display: Display,
    /// Guest RAM, e.g. 512M, 2G, 65536K (suffixes K, M, G; plain number = bytes).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Execution engine [default: auto: KVM where /dev/kvm runs guests on hardware and the run needs no
    /// exact instruction counts, else the JIT].
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    /// Under `--accel jit`: entries after which a block is translated to host code.
    #[arg(long, value_name = "N", default_value_t = machine::JIT_THRESHOLD, value_parser = clap::value_parser!(u32).range(1..))]
    jit_threshold: u32,
    /// Under `--accel jit`: the persistent translation cache, a directory (created if needed) where
    /// translations are saved and found again by the next run of the same guest code, or `off`.
    /// Default: off.
    #[arg(long, value_name = "DIR|off", default_value = "off")]
    jit_cache: String,
    /// On exit, print engine statistics to stderr (instructions retired, host time, JIT translation) and
    /// the hash of the whole machine state.
    #[arg(long)]
    stats: bool,
    /// Stop after this many retired instructions (exit status 124).
    #[arg(long, value_name = "N")]
    max_instructions: Option<u64>,
    /// Virtual CPU speed in instructions per virtual second (time is derived from instruction counts).
    #[arg(long, default_value_t = machine::DEFAULT_IPS, value_parser = clap::value_parser!(u64).range(1..))]
    ips: u64,
    /// What a triple fault does.
    #[arg(long, value_enum, default_value = "stop")]
    on_triple_fault: OnTripleFault,
    /// COM2's output: file:PATH or unix:PATH (a listening Unix socket). Default: discarded.
    #[arg(long, value_name = "TARGET")]
    com2: Option<String>,
    /// The RTC's time at power-on: 2026-01-01T00:00:00 (UTC), UNIX seconds, or `now` (host clock; the run
    /// then depends on when it starts). Default 2026-01-01T00:00:00, so runs are repeatable.
    #[arg(long, default_value = "2026-01-01T00:00:00", value_parser = parse_rtc)]
    rtc: i64,

    /// Whose CPUs the interpreter copies where results are architecturally undefined (flags after
    /// MUL/DIV/shifts/BCD/bit scans, a zero-count 32-bit REP): `intel`, `amd`, or `host` (this
    /// machine's vendor, as the differential tester uses). Default: the `--cpu` model's vendor.
    #[arg(long, value_parser = parse_quirks)]
    quirks: Option<cpu::Quirks>,
    /// CPU model as QEMU spells it: MODEL[,+feature][,-feature][,vendor=intel|amd], MODEL one of
    /// `ferrite` (the default), `qemu64`, `max` (all Ferrite implements) or `host-compatible`
    /// (what this host's CPU and Ferrite both have). See docs/CONFORMANCE.md.
    #[arg(long = "cpu", value_name = "MODEL", default_value = "ferrite", value_parser = cpu::CpuModel::parse)]
    cpu_model: cpu::CpuModel,
    /// Stop the machine on an instruction Ferrite does not implement ("unimplemented instruction")
    /// instead of raising #UD in the guest as a CPU without it does. For development.
    #[arg(long)]
    strict: bool,
    /// Where the 0xE9 debug console goes (default: stdout with --rom; none for the built-in demo, which
    /// prints the same lines on COM1).
    #[arg(long, value_enum)]
    debugcon: Option<Output>,
    /// Extra devices (repeatable), by name: `testdev` (QEMU's pc-testdev), `edu` (QEMU's educational PCI
    /// device), `vga`; the list is machine::devices::DEVICES. A PCI device takes `,romfile=FILE` as
    /// QEMU's -device does: FILE is its option ROM, behind the function's ROM BAR, which a BIOS scans
    /// (`romfile=` with no file: no ROM, e.g. no VGA BIOS). `ide` and `ahci` name the disk controllers
    /// (the board's PIIX3 IDE; the AHCI controller of a `--disk ...,if=ahci`) and take only `romfile=`.
    #[arg(long = "device", value_name = "DEVICE[,romfile=FILE]", value_parser = parse_device)]
    devices: Vec<DeviceArg>,
    /// A disk image (repeatable), as QEMU's -drive:
    /// `path[,if=ide|ahci][,media=disk|cdrom][,format=raw|qcow2][,readonly=on|off][,snapshot=on|off]`
    /// (`,,` is a comma in the path). IDE disks take primary master, primary slave, secondary master,
    /// secondary slave in turn; AHCI disks ports 0-5.
    #[arg(long = "disk", value_name = "SPEC", value_parser = storage::config::DiskSpec::parse)]
    disks: Vec<storage::config::DiskSpec>,
    /// IDE primary master hard disk image (QEMU's -hda).
    #[arg(long, value_name = "FILE")]
    hda: Option<PathBuf>,
    /// IDE primary slave hard disk image (QEMU's -hdb).
    #[arg(long, value_name = "FILE")]
    hdb: Option<PathBuf>,
    /// IDE secondary master CD-ROM: an ISO image (QEMU's -cdrom).
    #[arg(long, value_name = "FILE")]
    cdrom: Option<PathBuf>,
    #[command(flatten)]
    linux: LinuxArgs,
    #[command(flatten)]
    rr: rr::RrArgs,
    #[command(flatten)]
    debug: DebugArgs,
}

/// Debugging: the GDB stub (with reverse execution) and the monitor, as QEMU's -gdb/-s/-S/-monitor.
#[derive(clap::Args)]
#[command(next_help_heading = "Debugging")]
struct DebugArgs {
    /// GDB remote stub: tcp::PORT (on 127.0.0.1), tcp:HOST:PORT, or unix:PATH (a socket created with
    /// mode 0600). Under --accel interp or jit. See docs/DEBUGGING.md.
    #[arg(long, value_name = "ENDPOINT", value_parser = machine::gdb::Endpoint::parse)]
    gdb: Option<machine::gdb::Endpoint>,
    /// Shorthand for --gdb tcp::1234 (QEMU's -s).
    #[arg(short = 's')]
    gdb_default: bool,
    /// Hold the guest at its first instruction until gdb connects (QEMU's -S).
    #[arg(long)]
    wait_gdb: bool,
    /// Monitor (a QEMU HMP subset: info registers, x, xp, savevm, loadvm, stop, cont, quit) on
    /// tcp::PORT, tcp:HOST:PORT or unix:PATH.
    #[arg(long, value_name = "ENDPOINT", value_parser = machine::gdb::Endpoint::parse)]
    monitor: Option<machine::gdb::Endpoint>,
    /// Instructions between the in-memory checkpoints that reverse execution starts from.
    #[arg(long, value_name = "N", default_value_t = machine::reverse::DEFAULT_INTERVAL, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_interval: u64,
}

/// A `--device NAME[,romfile=FILE]` argument.
#[derive(Clone, Debug)]
struct DeviceArg {
    /// The name given.
    name: String,
    /// The device in the machine's table; `None` for the disk controllers (`ide`, `ahci`), which come
    /// with the board or a disk and only take `romfile=`.
    kind: Option<&'static machine::devices::DeviceKind>,
    /// `romfile=`: the option ROM file; an empty path means no ROM.
    romfile: Option<PathBuf>,
}

/// Where the PCI devices `--device` names sit on bus 0 (device << 3 | function); `None` for a device
/// that is not on PCI.
fn pci_devfn(name: &str) -> Option<u8> {
    match name {
        "vga" => Some(machine::VGA_DEVFN),
        "edu" => Some(machine::EDU_DEVFN),
        // The PIIX3 IDE function, 00:01.1.
        "ide" => Some((1 << 3) | 1),
        "ahci" => Some(storage::config::AHCI_DEVFN),
        _ => None,
    }
}

/// Parses `--device NAME[,romfile=FILE]` against the machine's device table (`,,` is a comma in FILE).
fn parse_device(s: &str) -> Result<DeviceArg, String> {
    // Split at single commas; a doubled one is a literal comma.
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                parts.last_mut().expect("never empty").push(',');
            }
            ',' => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    let name = parts.remove(0);
    let kind = machine::devices::DEVICES.iter().find(|k| k.name == name);
    if kind.is_none() && !matches!(name.as_str(), "ide" | "ahci") {
        let known: Vec<String> =
            machine::devices::DEVICES.iter().map(|k| format!("{} ({})", k.name, k.help)).collect();
        return Err(format!(
            "unknown device '{name}'; known: {}; ide and ahci (the disk controllers) take romfile=",
            known.join("; ")
        ));
    }
    let mut romfile = None;
    for opt in parts {
        match opt.split_once('=') {
            Some(("romfile", v)) if romfile.is_none() => romfile = Some(PathBuf::from(v)),
            Some(("romfile", _)) => return Err(format!("device '{name}': romfile= given twice")),
            _ => return Err(format!("device '{name}': unknown option '{opt}' (romfile=FILE)")),
        }
    }
    if romfile.is_some() && pci_devfn(&name).is_none() {
        return Err(format!("device '{name}' is not on PCI, so it has no option ROM (romfile=)"));
    }
    if kind.is_none() && romfile.is_none() {
        return Err(format!(
            "device '{name}' comes with the {}; --device {name} only takes romfile=FILE",
            if name == "ide" { "board" } else { "first --disk ...,if=ahci" }
        ));
    }
    Ok(DeviceArg { name, kind, romfile })
}

/// For a `--kernel` with a multiboot header (and no bzImage header): the boot QEMU would do, with
/// `--initrd` as a comma-separated module list ("path args", `,,` for a comma) and the command line
/// "<kernel path> <append>". `None` when the kernel is not a multiboot one (or cannot be read).
fn multiboot_boot(kernel: &PathBuf, a: &LinuxArgs) -> Option<Result<machine::LinuxBoot, String>> {
    let image = std::fs::read(kernel).ok()?;
    if image.get(0x202..0x206) == Some(b"HdrS") || !firmware::multiboot::is_multiboot(&image) {
        return None;
    }
    let mut modules = Vec::new();
    let list = a.initrd.as_ref().map(|p| p.to_string_lossy().into_owned());
    for entry in list.as_deref().map(firmware::multiboot::split_modules).unwrap_or_default() {
        let path = entry.split(' ').next().unwrap_or_default();
        match std::fs::read(path) {
            Ok(data) => modules.push(firmware::multiboot::Module { data, cmdline: entry.clone() }),
            Err(e) => return Some(Err(format!("cannot read multiboot module {path}: {e}"))),
        }
    }
    let cmdline =
        firmware::multiboot::qemu_cmdline(&kernel.to_string_lossy(), a.append.as_deref().unwrap_or(""));
    Some(Ok(machine::LinuxBoot { kernel: image, initrd: None, cmdline, modules }))
}

/// Direct Linux boot, like QEMU's -kernel/-initrd/-append.
#[derive(clap::Args)]
struct LinuxArgs {
    /// Boot this Linux bzImage (64-bit boot protocol) or multiboot kernel directly; the machine acts as BIOS
    /// and boot loader. With --bios, the BIOS boots the bzImage instead, as QEMU's -kernel does with
    /// firmware (fw_cfg's kernel items and Ferrite's linuxboot option ROM).
    #[arg(long, value_name = "FILE", conflicts_with = "rom")]
    kernel: Option<PathBuf>,
    /// Initial RAM disk for --kernel; for a multiboot kernel, its modules: `path args` entries separated
    /// by commas, as with QEMU.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line for --kernel (default: the guest images' serial-console line).
    #[arg(long, value_name = "CMDLINE")]
    append: Option<String>,
    /// Boot the built-in demo ROM instead of Linux.
    #[arg(long, conflicts_with_all = ["rom", "kernel"])]
    demo: bool,
}

/// What `ferrite run` boots when neither --rom nor --kernel is given: the guest images (fetched on first
/// use), or the demo ROM with a one-line reason when they cannot be had (offline, not Debian).
fn default_linux(a: &LinuxArgs) -> Option<machine::LinuxBoot> {
    if a.demo {
        return None;
    }
    let opts = images::ImagesArgs {
        dir: None,
        package: images::DEFAULT_META.into(),
        modules: vec![],
        rebuild: false,
        files: vec![],
        seabios: false,
        syslinux: false,
        memtest: false,
    }
    .options();
    match images::ensure(&opts) {
        Ok(imgs) => match (std::fs::read(&imgs.kernel), std::fs::read(&imgs.initrd)) {
            (Ok(kernel), Ok(initrd)) => {
                eprintln!(
                    "ferrite: booting {} (Ctrl-A x quits; `ferrite run --demo` runs the demo ROM)",
                    imgs.package
                );
                Some(machine::LinuxBoot {
                    kernel,
                    initrd: Some(initrd),
                    cmdline: a.append.clone().unwrap_or_else(|| images::DEFAULT_APPEND.into()),
                    modules: Vec::new(),
                })
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ferrite: cannot read the guest images ({e}); running the demo ROM instead");
                None
            }
        },
        Err(e) => {
            eprintln!("ferrite: no Linux guest ({e}); running the demo ROM instead");
            None
        }
    }
}

fn images_cmd(a: images::ImagesArgs) -> ExitCode {
    if a.seabios {
        return match images::seabios(a.dir.clone()) {
            Ok(s) => {
                println!("bios={}", s.bios.display());
                println!("vgabios={}", s.vgabios.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrite images: {e}");
                ExitCode::from(1)
            }
        };
    }
    let fetched = if a.syslinux {
        Some(images::syslinux(a.dir.clone()).map(|s| {
            format!(
                "installer={}\nmbr={}\nisolinux={}\nldlinux_c32={}",
                s.installer.display(),
                s.mbr.display(),
                s.isolinux.display(),
                s.ldlinux_c32.display()
            )
        }))
    } else if a.memtest {
        Some(
            images::memtest(a.dir.clone())
                .map(|m| format!("iso={}\nbin={}", m.iso.display(), m.bin.display())),
        )
    } else {
        None
    };
    if let Some(r) = fetched {
        return match r {
            Ok(lines) => {
                println!("{lines}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrite images: {e}");
                ExitCode::from(1)
            }
        };
    }
    match images::ensure(&a.options()) {
        Ok(imgs) => {
            println!("kernel={}", imgs.kernel.display());
            println!("initrd={}", imgs.initrd.display());
            println!("package={}", imgs.package);
            println!("busybox={}", imgs.busybox.display());
            println!("append={}", images::DEFAULT_APPEND);
            println!("marker={}", images::READY_MARKER);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrite images: {e}");
            ExitCode::from(1)
        }
    }
}

/// Parses `--quirks`.
fn parse_quirks(s: &str) -> Result<cpu::Quirks, String> {
    cpu::Quirks::parse(s).ok_or_else(|| format!("unknown CPU quirks `{s}` (expected intel, amd or host)"))
}

/// Parses `--rtc`: UNIX seconds, or a UTC date `YYYY-MM-DD` / `YYYY-MM-DDTHH:MM:SS`, or `now` (the host
/// clock, which makes the run depend on when it starts).
fn parse_rtc(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a time (try 2026-01-01T00:00:00, a UNIX time in seconds, or now)");
    if s == "now" {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?;
        return i64::try_from(d.as_secs()).map_err(|_| bad());
    }
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let t: Vec<i64> = time.split(':').map(|p| p.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else { return Err(bad()) };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *hh > 23 || *mm > 59 || *ss > 60 || *y < 1970 {
        return Err(bad());
    }
    // Days since 1970-01-01 (civil-from-days inverse, proleptic Gregorian).
    let (yy, mo) = if *m <= 2 { (y - 1, m + 9) } else { (*y, m - 3) };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Opens the `--com2` target: `file:PATH` (created or truncated) or `unix:PATH` (a listening Unix socket
/// to connect to). COM2 output only.
fn com2_sink(spec: &str) -> Result<Box<dyn FnMut(u8) + Send>, String> {
    if let Some(path) = spec.strip_prefix("file:") {
        let mut f = std::fs::File::create(path).map_err(|e| format!("--com2: cannot create {path}: {e}"))?;
        return Ok(Box::new(move |b| {
            let _ = f.write_all(&[b]);
        }));
    }
    if let Some(path) = spec.strip_prefix("unix:") {
        let mut s = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| format!("--com2: cannot connect to {path}: {e}"))?;
        return Ok(Box::new(move |b| {
            let _ = s.write_all(&[b]);
        }));
    }
    Err(format!("--com2: '{spec}' is neither file:PATH nor unix:PATH"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("'{s}' is not a size (try 512M or 2G)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))
}

fn sink(o: Output) -> Box<dyn FnMut(u8) + Send> {
    match o {
        Output::Stdout => stdout_sink(),
        Output::Stderr => Box::new(|b| {
            if CONSOLE_MUTED.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let _ = std::io::stderr().lock().write_all(&[b]);
        }),
        Output::None => Box::new(|_| {}),
    }
}

/// While set, guest output is not written (divergence bisection re-runs what was already shown).
static CONSOLE_MUTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stdout_sink() -> Box<dyn FnMut(u8) + Send> {
    Box::new(|b| {
        if CONSOLE_MUTED.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // Every byte is flushed: a shell prompt ("/ # ") or the echo of a typed key has no newline after
        // it and must show at once (a UART byte costs the guest far more than the write).
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(&[b]);
        let _ = o.flush();
    })
}

/// The BIOS to boot: `--bios`, or for a disk or CD boot without `--rom`/`--kernel`, Debian's SeaBIOS
/// (fetched into the guest-image cache on first use).
fn bios_path(args: &RunArgs) -> Result<Option<PathBuf>, String> {
    if let Some(p) = &args.bios {
        return Ok(Some(p.clone()));
    }
    let disks = !args.disks.is_empty() || args.hda.is_some() || args.hdb.is_some() || args.cdrom.is_some();
    if !disks || args.rom.is_some() || args.linux.kernel.is_some() || args.linux.demo {
        return Ok(None);
    }
    images::seabios(None).map(|p| Some(p.bios))
}

/// Parses `--screenshot FILE.png[@COUNT]`.
fn parse_screenshot(s: &str) -> Result<(PathBuf, Option<u64>), String> {
    match s.rsplit_once('@') {
        Some((path, n)) => n
            .parse()
            .map(|n| (PathBuf::from(path), Some(n)))
            .map_err(|_| format!("--screenshot: '{n}' is not an instruction count")),
        None => Ok((PathBuf::from(s), None)),
    }
}

/// Writes the VGA's screen to `path` as a PNG.
fn save_screenshot(m: &Machine, path: &std::path::Path) -> Result<(), String> {
    let png = m.screenshot_png().ok_or("no VGA to take a screenshot of")?;
    std::fs::write(path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Instructions between two redraws of the `curses` display.
const DISPLAY_SLICE: u64 = 50_000_000;
/// Instructions between two looks at the `sdl` window: a frame is rendered when the window has shown the
/// last one and 15 ms of host time have passed. Small, because a guest idling in HLT retires few
/// instructions per host second (its idle time is skipped, not run).
#[cfg(feature = "sdl")]
const WINDOW_SLICE: u64 = 100_000;
/// Least host time between two frames for the window.
#[cfg(feature = "sdl")]
const WINDOW_FRAME: std::time::Duration = std::time::Duration::from_millis(15);

/// Where `run_with_display` shows the screen besides screenshots.
enum Shown {
    /// Nowhere.
    None,
    /// The terminal (`--display curses`).
    Curses,
    /// The SDL window.
    #[cfg(feature = "sdl")]
    Window(sdl::Window),
}

/// Runs the machine to the end (`max`), taking the screenshot at its instruction count (or at the end)
/// and, with `--display curses`, redrawing the text screen whenever it changed after each
/// [`DISPLAY_SLICE`] instructions. Slicing the run does not change what the guest does: device events
/// are placed by virtual time, not by where a run stops.
fn run_with_display(
    m: &mut Machine,
    max: Option<u64>,
    shot: Option<&(PathBuf, Option<u64>)>,
    display: &Shown,
    mut snap: Option<(u64, PathBuf)>,
) -> RunOutcome {
    let mut shot_at = shot.and_then(|s| s.1);
    let mut last = None;
    #[cfg(feature = "sdl")]
    let mut last_frame: Option<std::time::Instant> = None;
    let outcome = loop {
        let mut stop = max;
        if let Some(at) = shot_at {
            stop = Some(stop.map_or(at, |l| l.min(at)));
        }
        if let Some((at, _)) = &snap {
            stop = Some(stop.map_or(*at, |l| l.min(*at)));
        }
        let slice = match display {
            Shown::None => None,
            Shown::Curses => Some(DISPLAY_SLICE),
            #[cfg(feature = "sdl")]
            Shown::Window(_) => Some(WINDOW_SLICE),
        };
        if let Some(s) = slice {
            let n = m.cpu.icount.saturating_add(s);
            stop = Some(stop.map_or(n, |l| l.min(n)));
        }
        let o = m.run(stop);
        if let (Some(at), Some((path, _))) = (shot_at, shot)
            && m.cpu.icount >= at
        {
            if let Err(e) = save_screenshot(m, path) {
                eprintln!("ferrite: {e}");
            }
            shot_at = None;
        }
        if let Some((at, path)) = &snap
            && m.cpu.icount >= *at
        {
            if let Err(e) = rr::save_snapshot(m, path) {
                eprintln!("ferrite: {e}");
            }
            snap = None;
        }
        match display {
            Shown::None => {}
            Shown::Curses => last = show_text(m, last),
            // A frame only when the window has shown the previous one: rendering reads the state and
            // changes nothing, so how often it happens does not matter to the guest.
            #[cfg(feature = "sdl")]
            Shown::Window(w) => {
                if w.wants_frame()
                    && last_frame.is_none_or(|t| t.elapsed() >= WINDOW_FRAME)
                    && let Some(v) = m.vga()
                {
                    let f = v.render();
                    w.show(f.width, f.height, f.rgb);
                    last_frame = Some(std::time::Instant::now());
                }
            }
        }
        match o {
            RunOutcome::InstructionLimit if max.is_none_or(|l| m.cpu.icount < l) => continue,
            other => break other,
        }
    };
    if let Some((path, None)) = shot
        && let Err(e) = save_screenshot(m, path)
    {
        eprintln!("ferrite: {e}");
    }
    outcome
}

/// The `curses` display: the VGA text screen drawn in the terminal with its colours, when it differs
/// from `last` (what was drawn before); returns what is on the terminal now.
fn show_text(m: &Machine, last: Option<machine::TextScreen>) -> Option<machine::TextScreen> {
    let Some(t) = m.vga().and_then(|v| v.text_screen()) else { return last };
    if last.as_ref() == Some(&t) {
        return last;
    }
    let mut out = String::from("\x1b[2J\x1b[H");
    // The PC's 16 text colours in ANSI order (CGA blue is ANSI 4, red ANSI 1).
    const ANSI: [u8; 8] = [0, 4, 2, 6, 1, 5, 3, 7];
    for r in 0..t.rows {
        for c in 0..t.cols {
            let cell = t.cells[r * t.cols + c];
            let fg = ANSI[usize::from(cell.attr & 7)] + if cell.attr & 8 != 0 { 90 } else { 30 };
            let bg = ANSI[usize::from((cell.attr >> 4) & 7)] + 40;
            let ch = if (0x20..0x7f).contains(&cell.ch) { cell.ch as char } else { ' ' };
            out.push_str(&format!("\x1b[{fg};{bg}m{ch}"));
        }
        out.push_str("\x1b[0m\r\n");
    }
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(out.as_bytes());
    let _ = o.flush();
    Some(t)
}

/// The disks of `--disk`, `--hda`, `--hdb` and `--cdrom`.
fn disk_specs(args: &RunArgs) -> Vec<storage::config::DiskSpec> {
    let mut specs = args.disks.clone();
    for (p, index) in [(&args.hda, 0), (&args.hdb, 1), (&args.cdrom, 2)] {
        if let Some(p) = p {
            specs.push(storage::config::DiskSpec::shorthand(p, index));
        }
    }
    specs
}

/// How `build_machine` sets up a machine beyond what the arguments say.
#[derive(Clone, Copy)]
struct BuildOptions {
    /// The engine, instead of `--accel`'s.
    accel: Option<machine::Accel>,
    /// Guest output goes to the host's stdout (else it is discarded: the second machine of a pair).
    console: bool,
    /// Every disk through a `snapshot=on` overlay (record, replay, lockstep: the images stay as they
    /// were, so a replay starts from the same bytes and two machines can open them at once).
    overlay_disks: bool,
}

/// A machine built from `run`'s arguments, and the content hashes of the images it was built from.
struct Built {
    m: Machine,
    images: Vec<(String, u64)>,
    /// Mutes the console while reverse execution re-runs what was already shown.
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The content hash of a file, read in pieces.
fn file_hash(path: &std::path::Path) -> Result<u64, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut h = machine::record::ContentHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.write(&buf[..n]),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let accel = args.rr.lockstep.then_some(machine::Accel::Jit);
    let opts = BuildOptions { accel, console: true, overlay_disks: args.rr.needs_overlays() };
    let d = &args.debug;
    let debugging = d.gdb.is_some() || d.gdb_default || d.wait_gdb || d.monitor.is_some();
    match build_machine(&args, opts) {
        Ok(b) if debugging => debug_run(&args, b),
        Ok(b) if args.screenshot.is_some() || args.display != Display::None => display_run(&args, b),
        Ok(b) => rr::drive(&args, b),
        Err(code) => code,
    }
}

/// Builds the machine `run`'s arguments describe (errors are printed; the exit code is returned).
fn build_machine(args: &RunArgs, opts: BuildOptions) -> Result<Built, ExitCode> {
    let mut specs = disk_specs(args);
    if opts.overlay_disks {
        specs.iter_mut().for_each(|s| s.snapshot = true);
    }
    let mut images = Vec::new();
    for s in &specs {
        match file_hash(&s.path) {
            Ok(h) => images.push((format!("disk {}", s.path.display()), h)),
            Err(e) => {
                eprintln!("ferrite: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    // The images are opened (and locked) before anything else so every error shows now.
    let controllers = match storage::config::build(&specs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrite: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let bios_path = match bios_path(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferrite: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let firmware = match args.rom.as_ref().or(bios_path.as_ref()) {
        Some(p) => match firmware::load_rom(p) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("ferrite: {e}");
                return Err(ExitCode::from(2));
            }
        },
        None => firmware::demo_rom().to_vec(),
    };
    let multiboot = args.linux.kernel.as_ref().and_then(|k| multiboot_boot(k, &args.linux));
    let is_multiboot = multiboot.is_some();
    let linux = match &args.linux.kernel {
        Some(_) if multiboot.is_some() => match multiboot {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                eprintln!("ferrite: {e}");
                return Err(ExitCode::from(2));
            }
            None => None,
        },
        Some(k) => {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
            };
            let kernel = read(k, "kernel");
            let initrd = args.linux.initrd.as_ref().map(|p| read(p, "initrd")).transpose();
            match (kernel, initrd) {
                (Ok(kernel), Ok(initrd)) => Some(machine::LinuxBoot {
                    kernel,
                    initrd,
                    cmdline: args.linux.append.clone().unwrap_or_else(|| images::DEFAULT_APPEND.into()),
                    modules: Vec::new(),
                }),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("ferrite: {e}");
                    return Err(ExitCode::from(2));
                }
            }
        }
        None if args.rom.is_none() && bios_path.is_none() => default_linux(&args.linux),
        None => None,
    };
    match &linux {
        Some(l) => {
            images.push(("kernel".into(), machine::record::content_hash(&l.kernel)));
            if let Some(i) = &l.initrd {
                images.push(("initrd".into(), machine::record::content_hash(i)));
            }
            for (n, md) in l.modules.iter().enumerate() {
                images.push((format!("module {n}"), machine::record::content_hash(&md.data)));
            }
            images.push(("command line".into(), machine::record::content_hash(l.cmdline.as_bytes())));
        }
        None => images.push(("firmware".into(), machine::record::content_hash(&firmware))),
    }
    if linux.is_some() && bios_path.is_some() {
        images.push(("firmware".into(), machine::record::content_hash(&firmware)));
    }
    // A kernel without a BIOS is booted directly (the machine makes its own ROM); with one, the BIOS
    // boots it through fw_cfg and the linuxboot option ROM.
    let direct = linux.is_some() && bios_path.is_none();
    let mut cfg = MachineConfig::new(args.memory, if direct { Vec::new() } else { firmware });
    cfg.linux = linux;
    // Each device once, in table order (as the former per-device flags did).
    let named = |name: &str| args.devices.iter().any(|d| d.name == name);
    for kind in machine::devices::DEVICES {
        if args.devices.iter().any(|d| d.kind.is_some_and(|k| std::ptr::eq(k, kind))) {
            cfg.devices.push(machine::DeviceSpec::Named(kind));
        }
    }
    // Option ROMs (`romfile=`), attached once every device is there: (devfn, file, what).
    let mut roms: Vec<(u8, PathBuf, String)> = args
        .devices
        .iter()
        .filter_map(|d| Some((pci_devfn(&d.name)?, d.romfile.clone()?, format!("option ROM of {}", d.name))))
        .collect();
    if let Some(bp) = &bios_path {
        // The VGA BIOS sits behind the VGA's ROM BAR, where SeaBIOS finds it scanning PCI, as with
        // QEMU; `--device vga,romfile=` replaces it.
        if !roms.iter().any(|(devfn, _, _)| *devfn == machine::VGA_DEVFN) {
            let vga = args.vgabios.clone().unwrap_or_else(|| bp.with_file_name("vgabios-stdvga.bin"));
            roms.push((machine::VGA_DEVFN, vga, "VGA BIOS".into()));
        }
        let mut b =
            machine::BiosConfig { log: sink(args.bios_log.unwrap_or(Output::None)), ..Default::default() };
        if let Some(order) = args.boot {
            b.boot_order = order;
        } else if args.cdrom.is_some() && args.hda.is_none() {
            b.boot_order = [3, 2, 1];
        }
        cfg.bios = Some(b);
        if !named("vga") {
            cfg.devices.push(machine::DeviceSpec::named("vga").expect("the VGA is in the device table"));
        }
    }
    cfg.ide = Some(controllers.ide);
    let have_ahci = controllers.ahci.is_some();
    if let Some(ahci) = controllers.ahci {
        cfg.devices
            .push(machine::DeviceSpec::Pci { devfn: storage::config::AHCI_DEVFN, function: Box::new(ahci) });
    }
    if named("ahci") && !have_ahci {
        eprintln!("ferrite: --device ahci,romfile=: there is no AHCI controller (give a --disk ...,if=ahci)");
        return Err(ExitCode::from(2));
    }
    for (devfn, path, what) in roms {
        // An empty file name (`romfile=`) leaves the function without a ROM.
        if path.as_os_str().is_empty() {
            continue;
        }
        match std::fs::read(&path) {
            Ok(image) => {
                images.push((format!("{what} {}", path.display()), machine::record::content_hash(&image)));
                cfg.devices.push(machine::DeviceSpec::OptionRom { devfn, image });
            }
            Err(e) => {
                eprintln!("ferrite: cannot read the {what} {}: {e}", path.display());
                return Err(ExitCode::from(2));
            }
        }
    }
    cfg.accel = opts.accel.unwrap_or_else(|| choose_accel(args.accel, needs_counting(args)));
    cfg.jit_threshold = args.jit_threshold;
    cfg.jit.cache = (args.jit_cache != "off").then(|| PathBuf::from(&args.jit_cache));
    // A development knob for measurements: compile on the interpreter's thread, as before the
    // compile thread existed.
    cfg.jit.background = std::env::var_os("FERRITE_JIT_SYNC").is_none();
    cfg.ips = args.ips;
    cfg.seed = args.rr.seed;
    // Output is muted while reverse execution re-runs what was already shown.
    let mute = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    cfg.com1 = if opts.console { muted(stdout_sink(), &mute) } else { Box::new(|_| {}) };
    if let Some(spec) = args.com2.as_ref().filter(|_| opts.console) {
        match com2_sink(spec) {
            Ok(sink) => cfg.com2 = sink,
            Err(e) => {
                eprintln!("ferrite: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    cfg.rtc_start = args.rtc;
    cfg.model = args.cpu_model;
    cfg.quirks = args.quirks.unwrap_or(args.cpu_model.vendor.quirks());
    cfg.strict = args.strict;
    // Test ROMs and multiboot test kernels report on 0xE9.
    let debugcon = args.debugcon.unwrap_or(if args.rom.is_some() || is_multiboot {
        Output::Stdout
    } else {
        Output::None
    });
    cfg.debugcon = if opts.console { muted(sink(debugcon), &mute) } else { Box::new(|_| {}) };
    cfg.on_triple_fault = match args.on_triple_fault {
        OnTripleFault::Stop => TripleFaultAction::Stop,
        OnTripleFault::Reset => TripleFaultAction::Reset,
    };
    let mut m = match Machine::new(cfg) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("ferrite: {e}");
            return Err(ExitCode::from(2));
        }
    };
    if let Some(p) = &args.rr.restore {
        match file_hash(p) {
            Ok(h) => images.push(("restored snapshot".into(), h)),
            Err(e) => {
                eprintln!("ferrite: --restore: {e}");
                return Err(ExitCode::from(2));
            }
        }
        if let Err(e) = machine::snapfile::restore_file(&mut m, p) {
            eprintln!("ferrite: --restore {}: {e}", p.display());
            return Err(ExitCode::from(2));
        }
    }
    Ok(Built { m, images, mute })
}

/// `run` under the GDB stub or the monitor (docs/DEBUGGING.md).
fn debug_run(args: &RunArgs, built: Built) -> ExitCode {
    let Built { mut m, mute, .. } = built;
    m.attach_input(console::spawn_reader());
    let started = std::time::Instant::now();
    let d = &args.debug;
    let gdb =
        if d.gdb_default { Some(machine::gdb::Endpoint::parse("tcp::1234").expect("valid")) } else { None };
    let gdb = d.gdb.clone().or(gdb);
    if d.wait_gdb && gdb.is_none() {
        eprintln!("ferrite: --wait-gdb needs --gdb (or -s)");
        return ExitCode::from(2);
    }
    let debugging = gdb.is_some() || d.monitor.is_some();
    let outcome = {
        let _raw = console::RawMode::enable();
        if debugging {
            let opts = machine::gdb::DebugOptions {
                gdb,
                wait: d.wait_gdb,
                monitor: d.monitor.clone(),
                mute: Some(mute.clone()),
                max_instructions: args.max_instructions,
                checkpoint_interval: d.checkpoint_interval,
            };
            match machine::gdb::run(&mut m, opts) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("ferrite: {e}");
                    return ExitCode::from(2);
                }
            }
        } else {
            m.run(args.max_instructions)
        }
    };
    finish(&m, args.stats, outcome, started)
}

/// `run` with a screenshot or the curses display (the VGA screen, see README).
fn display_run(args: &RunArgs, built: Built) -> ExitCode {
    let Built { mut m, .. } = built;
    let shot = match args.screenshot.as_deref().map(parse_screenshot).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite: {e}");
            return ExitCode::from(2);
        }
    };
    if args.rr.record.is_some() || args.rr.lockstep {
        eprintln!("ferrite: --record and --lockstep do not combine with --screenshot or --display");
        return ExitCode::from(2);
    }
    let snap = match rr::snapshot_at(&args.rr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite: {e}");
            return ExitCode::from(2);
        }
    };
    if (shot.is_some() || args.display != Display::None) && m.vga().is_none() {
        eprintln!("ferrite: --screenshot and --display curses|sdl need a VGA (--bios, or --device vga)");
        return ExitCode::from(2);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let shown = match args.display {
        Display::None => Shown::None,
        Display::Curses => Shown::Curses,
        #[cfg(feature = "sdl")]
        Display::Sdl => match sdl::Window::open(tx.clone()) {
            Ok(w) => Shown::Window(w),
            Err(e) => {
                eprintln!("ferrite: --display sdl: cannot open the window: {e}");
                return ExitCode::from(2);
            }
        },
        #[cfg(not(feature = "sdl"))]
        Display::Sdl => {
            eprintln!(
                "ferrite: --display sdl: this ferrite was built without the `sdl` feature (cargo build --release -p ferrite --features sdl, with libsdl2-dev)"
            );
            return ExitCode::from(2);
        }
    };
    console::spawn_reader_into(tx);
    m.attach_input(rx);
    let started = std::time::Instant::now();
    let outcome = {
        let _raw = console::RawMode::enable();
        run_with_display(&mut m, args.max_instructions, shot.as_ref(), &shown, snap)
    };
    finish(&m, args.stats, outcome, started)
}

/// Prints `--stats` and turns the outcome into the exit status.
fn finish(m: &Machine, stats: bool, outcome: RunOutcome, started: std::time::Instant) -> ExitCode {
    let _ = std::io::stdout().flush();
    if stats {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "ferrite: {} instructions in {secs:.2} s of host time ({:.1} MIPS) under {}",
            m.cpu.icount,
            m.cpu.icount as f64 / secs / 1e6,
            m.engine().name()
        );
        if let Some(s) = m.engine().stats() {
            eprintln!("ferrite: {s}");
            if let Some(inline) = m.interp().map(|i| i.inline_retired()) {
                eprintln!(
                    "ferrite: {inline} retired instructions ran inline in generated code ({:.1}% of all)",
                    inline as f64 * 100.0 / m.cpu.icount.max(1) as f64
                );
            }
        }
        let c = m.board.counters();
        eprintln!(
            "ferrite: {}; board: {} dispatch calls, {} device-advance checks ({} found a deadline due), {} deadline scans",
            m.loop_stats, c.calls, c.advance_checks, c.advance_walks, c.deadline_scans
        );
        // The whole machine's state (CPU, devices, RAM): the same guest gives the same hash under every
        // instruction-counting engine.
        eprintln!("ferrite: state hash {:016x}", m.state_hash());
    }
    match outcome {
        RunOutcome::Exited(code) => ExitCode::from((code & 0xff) as u8),
        RunOutcome::Quit => ExitCode::SUCCESS,
        RunOutcome::InstructionLimit => {
            eprintln!("ferrite: instruction limit reached after {} instructions", m.cpu.icount);
            ExitCode::from(124)
        }
        RunOutcome::Stopped { reason, dump } => {
            eprintln!("ferrite: machine stopped: {reason}");
            eprintln!("{dump}");
            ExitCode::from(70)
        }
        // Only a debugger sets breakpoints, and it handles its stops.
        RunOutcome::DebugStop => {
            eprintln!("ferrite: stopped at a debugger breakpoint with no debugger attached");
            ExitCode::from(70)
        }
    }
}

/// `sink`, silent while `mute` is set.
fn muted(
    mut sink: Box<dyn FnMut(u8) + Send>,
    mute: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Box<dyn FnMut(u8) + Send> {
    let mute = mute.clone();
    Box::new(move |b| {
        if !mute.load(std::sync::atomic::Ordering::Relaxed) {
            sink(b)
        }
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Bad arguments: one line naming the problem (clap's own text adds usage and tips).
            let text = e.render().to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            eprintln!("ferrite: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run(a) => run(*a),
        Command::Replay(a) => rr::replay(a),
        Command::Images(a) => images_cmd(a),
        Command::Difftest(a) => difftest(a),
        Command::DifftestSys(a) => difftest_sys(a),
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, Command, KvmFound, auto_engine, needs_counting, parse_rtc};
    use clap::Parser;

    #[test]
    fn auto_takes_kvm_only_on_hardware() {
        let (e, why) = auto_engine(KvmFound::Hardware(2500.0));
        assert_eq!(e, machine::Accel::Kvm);
        assert!(why.contains("2500 MIPS"), "{why}");
        let (e, why) = auto_engine(KvmFound::NotUsable("/dev/kvm is PVM".into()));
        assert_eq!(e, machine::Accel::Jit);
        assert!(why.contains("PVM"), "{why}");
    }

    /// The options that need exact instruction counts keep `auto` off KVM; plain runs do not.
    #[test]
    fn counting_options_are_found() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["ferrite", "run", "--demo"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("parses").command {
                Command::Run(a) => needs_counting(&a),
                _ => unreachable!("a run command"),
            }
        };
        assert_eq!(run(&[]), None);
        assert_eq!(run(&["--screenshot", "a.png"]), None);
        assert_eq!(run(&["--record", "x.rr"]), Some("--record"));
        assert_eq!(run(&["--lockstep"]), Some("--lockstep"));
        assert_eq!(run(&["--snapshot-at", "5", "s.snap"]), Some("--snapshot-at"));
        assert_eq!(run(&["--restore", "s.snap"]), Some("--restore"));
        assert_eq!(run(&["--max-instructions", "10"]), Some("--max-instructions"));
        assert_eq!(run(&["-s"]), Some("--gdb"));
        assert_eq!(run(&["--monitor", "tcp::4444"]), Some("--monitor"));
        assert_eq!(run(&["--screenshot", "a.png@100"]), Some("--screenshot at a count"));
    }

    #[test]
    fn rtc_times_parse() {
        assert_eq!(parse_rtc("0"), Ok(0));
        assert_eq!(parse_rtc("1970-01-01"), Ok(0));
        assert_eq!(parse_rtc("2026-01-01T00:00:00"), Ok(1_767_225_600));
        assert_eq!(parse_rtc("2000-02-29T12:34:56"), Ok(951_827_696));
        assert!(parse_rtc("2026-13-01").is_err());
        assert!(parse_rtc("soon").is_err());
        assert!(parse_rtc("now").unwrap() > 1_767_225_600);
    }
}
