//! `ferrite images`: the guest images for the direct Linux boot, made from Debian's own packages.
//!
//! The kernel package is resolved through its meta-package (`linux-image-cloud-amd64` by default, or
//! `linux-image-amd64`): `apt-cache depends` names the versioned package the meta-package pulls in today,
//! `apt-get download` fetches it and `busybox-static` into the cache, `dpkg -x` unpacks them there (nothing
//! is installed on the host), and the initramfs is written here: a gzip-compressed newc cpio with
//! busybox, `/init` and any kernel modules asked for (with the modules they depend on, read from each
//! module's `.modinfo`). The cloud kernel has everything the machine needs built in (8250 serial console,
//! ACPI, devtmpfs, tmpfs), so the default module list is empty.
//!
//! `/init` mounts proc, sysfs, devtmpfs and a tmpfs on /tmp, loads the modules, prints [`READY_MARKER`]
//! and hands PID 1 to busybox init, which keeps a shell on the console and carries out `poweroff` and
//! `reboot` (a shell script as PID 1 would ignore the signals busybox's `poweroff` sends).
//!
//! Cache layout (default `<target dir>/guest-images`, or `--dir`, or `$FERRITE_IMAGES`):
//! `debs/` the downloaded packages; `<package>_<version>/` each unpacked package;
//! `initrd-<kernel package>_<version>.img` the initramfs; `current` the paths of the last good set, used
//! when the package lists cannot be read (offline); `.lock` held (flock) by the run that downloads and
//! builds, so that concurrent runs (parallel tests) take turns. Every file or directory appears by a
//! rename once complete, so a killed run leaves only `*.tmp-<pid>` / `.partial-<pid>` debris behind.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `/init` prints once the system is up; tests wait for it.
pub const READY_MARKER: &str = "FERRITE-READY";
/// The default kernel meta-package (LZ4-compressed, few drivers: boots fastest).
pub const DEFAULT_META: &str = "linux-image-cloud-amd64";
/// The default kernel command line for the images: serial console, no probing the machine lacks.
pub const DEFAULT_APPEND: &str = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 quiet";

/// A ready set of guest images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImages {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The gzip newc initramfs.
    pub initrd: PathBuf,
    /// The versioned kernel package it came from.
    pub package: String,
    /// The static busybox the initramfs carries (the same binary runs on the host).
    pub busybox: PathBuf,
}

/// Options for [`ensure`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Cache directory.
    pub dir: PathBuf,
    /// Kernel meta-package.
    pub meta: String,
    /// Kernel modules to put in the initramfs and load at boot (names as in `modprobe`).
    pub modules: Vec<String>,
    /// Rebuild the initramfs even if it is cached.
    pub rebuild: bool,
    /// Extra host files to put in the initramfs: (path in the guest, host file).
    pub files: Vec<(String, PathBuf)>,
}

/// `<target dir>/guest-images`: `$FERRITE_IMAGES`, else beside the running binary's profile directory
/// (`target/release/ferrite` -> `target/guest-images`), else `./target/guest-images`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRITE_IMAGES") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/ferrite or target/<profile>/deps/<test binary>
        let mut p = exe.parent().map(Path::to_path_buf);
        if p.as_ref().is_some_and(|d| d.ends_with("deps")) {
            p = p.and_then(|d| d.parent().map(Path::to_path_buf));
        }
        if let Some(profile) = p
            && let Some(target) = profile.parent()
            && target.join("CACHEDIR.TAG").exists()
        {
            return target.join("guest-images");
        }
    }
    PathBuf::from("target").join("guest-images")
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run {what}: {e} (the guest images come from Debian's packages: run on Debian with apt, \
             or pass --kernel/--initrd)"
        )
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err
            .lines()
            .filter(|l| !l.starts_with("W: Download is performed unsandboxed"))
            .collect::<Vec<_>>();
        return Err(format!("{what} failed ({}): {}", out.status, err.join(" / ").trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned package `meta` depends on (`linux-image-6.1.0-56-cloud-amd64`).
pub fn resolve_meta(meta: &str) -> Result<String, String> {
    let out = run_tool(
        Command::new("apt-cache").args(["depends", "--no-recommends", "--no-suggests", meta]),
        &format!("apt-cache depends {meta}"),
    )?;
    parse_depends(&out, meta).ok_or_else(|| {
        format!(
            "apt-cache knows no kernel package behind {meta}; run `apt-get update` first (scripts/setup.sh does)"
        )
    })
}

fn parse_depends(out: &str, meta: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|d| d.starts_with("linux-image-") && *d != meta && !d.starts_with('<'))
        .map(str::to_string)
}

/// The candidate version of `pkg`.
/// The candidate version of `pkg` and its architecture (`amd64`, or `all` for firmware like SeaBIOS).
fn candidate_version(pkg: &str) -> Result<(String, String), String> {
    let out = run_tool(
        Command::new("apt-cache").args(["show", "--no-all-versions", pkg]),
        &format!("apt-cache show {pkg}"),
    )?;
    let field = |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
    let version = field("Version:")
        .ok_or_else(|| format!("apt-cache show {pkg} gave no version; run `apt-get update` first"))?;
    Ok((version, field("Architecture:").unwrap_or_else(|| "amd64".into())))
}

/// Downloads `pkg` into `dir/debs` (unless there) and unpacks it into `dir/<pkg>_<version>`; returns
/// that directory. Both steps are atomic (work in a per-process temporary, then a rename), so a run
/// killed half-way leaves no partial package behind for the next run to trust.
fn fetch_and_unpack(dir: &Path, pkg: &str) -> Result<PathBuf, String> {
    let (version, arch) = candidate_version(pkg)?;
    let safe = |s: &str| s.replace([':', '/'], "_");
    let root = dir.join(format!("{}_{}", pkg, safe(&version)));
    if root.join(".unpacked").exists() {
        return Ok(root);
    }
    let pid = std::process::id();
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("cannot create {}: {e}", debs.display()))?;
    let deb_name = format!("{pkg}_{}_{arch}.deb", version.replace(':', "%3a"));
    let deb = debs.join(&deb_name);
    if !deb.exists() {
        eprintln!("ferrite images: downloading {pkg} {version}");
        let partial = debs.join(format!(".partial-{pid}"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        // Up to three tries: a mirror or proxy mid-sync serves a file of the wrong size now and then.
        let mut got = Err(String::new());
        for attempt in 1..=3 {
            got = run_tool(
                Command::new("apt-get")
                    .args(["download", "-q", &format!("{pkg}={version}")])
                    .current_dir(&partial),
                &format!("apt-get download {pkg}"),
            );
            match &got {
                Err(e) if attempt < 3 => {
                    eprintln!("ferrite images: {e}; trying again");
                    std::thread::sleep(std::time::Duration::from_secs(2 * attempt));
                }
                _ => break,
            }
        }
        let got = got.and_then(|_| {
            let fetched = partial.join(&deb_name);
            if !fetched.exists() {
                return Err(format!("apt-get download {pkg} did not produce {deb_name}"));
            }
            std::fs::rename(&fetched, &deb).map_err(|e| format!("cannot move {deb_name} into place: {e}"))
        });
        let _ = std::fs::remove_dir_all(&partial);
        got?;
    }
    let tmp = dir.join(format!(".{}_{}.tmp-{pid}", pkg, safe(&version)));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let unpacked =
        run_tool(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp), &format!("dpkg -x {}", deb.display()))
            .and_then(|_| std::fs::write(tmp.join(".unpacked"), b"").map_err(|e| e.to_string()))
            .and_then(|_| {
                // A directory left by an older, non-atomic run (no `.unpacked`) is replaced.
                let _ = std::fs::remove_dir_all(&root);
                std::fs::rename(&tmp, &root)
                    .map_err(|e| format!("cannot move {} into place: {e}", root.display()))
            });
    if unpacked.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    unpacked?;
    Ok(root)
}

/// Debian's SeaBIOS as `ferrite run` boots disks and CDs with it.
#[derive(Clone, Debug)]
pub struct Seabios {
    /// The BIOS image (`bios.bin`, 128 KiB).
    pub bios: PathBuf,
    /// The VGA BIOS for the standard VGA (`vgabios-stdvga.bin`).
    pub vgabios: PathBuf,
}

/// Debian's package `pkg` unpacked in the image cache `dir`: fetched and unpacked on first use (under
/// the cache lock); offline, an unpacked copy of any version already in the cache is used.
fn package_root(dir: &Path, pkg: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _lock = lock_cache(dir)?;
    match fetch_and_unpack(dir, pkg) {
        Ok(r) => Ok(r),
        Err(e) => {
            let prefix = format!("{pkg}_");
            let cached = std::fs::read_dir(dir).ok().and_then(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
                    .find(|p| p.join(".unpacked").exists())
            });
            match cached {
                Some(r) => {
                    eprintln!("ferrite images: {e}; using the cached {}", r.display());
                    Ok(r)
                }
                None => Err(e),
            }
        }
    }
}

/// Checks that every path exists (a package whose layout changed says so in one line).
fn all_exist(pkg: &str, paths: &[&PathBuf]) -> Result<(), String> {
    match paths.iter().find(|p| !p.exists()) {
        Some(p) => Err(format!("the {pkg} package has no {}", p.display())),
        None => Ok(()),
    }
}

/// Fetches Debian's `seabios` package into the image cache (`dir`, default [`default_dir`]) on first
/// use, like the other guest images, and returns its BIOS and VGA BIOS. Offline, an unpacked copy
/// already in the cache is used.
pub fn seabios(dir: Option<PathBuf>) -> Result<Seabios, String> {
    let dir = dir.unwrap_or_else(default_dir);
    let root = package_root(&dir, "seabios")
        .map_err(|e| format!("no BIOS for the disk boot: {e} (or give --bios FILE)"))?;
    let s = Seabios {
        bios: root.join("usr/share/seabios/bios.bin"),
        vgabios: root.join("usr/share/seabios/vgabios-stdvga.bin"),
    };
    all_exist("seabios", &[&s.bios, &s.vgabios])?;
    Ok(s)
}

/// Debian's SYSLINUX boot loaders, as the BIOS boot tests install them on disk and CD images they make
/// (nothing is installed on the host: the packages are unpacked in the image cache).
#[derive(Clone, Debug)]
pub struct Syslinux {
    /// The installer for FAT file systems in image files (`syslinux`, package `syslinux`). It writes the
    /// volume boot record, `ldlinux.sys` and `ldlinux.c32` through mtools, which must be on PATH.
    pub installer: PathBuf,
    /// The MBR boot code (`mbr.bin`, 440 bytes; `syslinux-common`): boots the active partition.
    pub mbr: PathBuf,
    /// The El Torito no-emulation boot image (`isolinux.bin`, package `isolinux`).
    pub isolinux: PathBuf,
    /// The core module every SYSLINUX variant loads (`ldlinux.c32`, `syslinux-common`); ISOLINUX
    /// needs it beside `isolinux.bin`.
    pub ldlinux_c32: PathBuf,
}

/// Fetches `syslinux`, `syslinux-common` and `isolinux` into the image cache on first use.
pub fn syslinux(dir: Option<PathBuf>) -> Result<Syslinux, String> {
    let dir = dir.unwrap_or_else(default_dir);
    let bin = package_root(&dir, "syslinux")?;
    let common = package_root(&dir, "syslinux-common")?;
    let iso = package_root(&dir, "isolinux")?;
    let s = Syslinux {
        installer: bin.join("usr/bin/syslinux"),
        mbr: common.join("usr/lib/syslinux/mbr/mbr.bin"),
        isolinux: iso.join("usr/lib/ISOLINUX/isolinux.bin"),
        ldlinux_c32: common.join("usr/lib/syslinux/modules/bios/ldlinux.c32"),
    };
    all_exist("syslinux", &[&s.installer])?;
    all_exist("syslinux-common", &[&s.mbr, &s.ldlinux_c32])?;
    all_exist("isolinux", &[&s.isolinux])?;
    Ok(s)
}

/// Debian's memtest86+ (version 6): the BIOS-bootable CD image and the 64-bit program itself.
#[derive(Clone, Debug)]
pub struct Memtest {
    /// `memtest86+x64.iso`: an El Torito CD that boots memtest86+ from the BIOS.
    pub iso: PathBuf,
    /// `memtest86+x64.bin`: the program, loadable as a Linux kernel (boot loaders' `linux` command).
    pub bin: PathBuf,
}

/// Fetches `memtest86+` into the image cache on first use.
pub fn memtest(dir: Option<PathBuf>) -> Result<Memtest, String> {
    let dir = dir.unwrap_or_else(default_dir);
    let root = package_root(&dir, "memtest86+")?;
    let m = Memtest {
        iso: root.join("usr/lib/memtest86+/memtest86+x64.iso"),
        bin: root.join("boot/memtest86+x64.bin"),
    };
    all_exist("memtest86+", &[&m.iso, &m.bin])?;
    Ok(m)
}

/// Takes the cache directory's lock: one `ferrite images` (or test) at a time downloads and builds in
/// it; the others wait, then find the work done. Held until the returned file is dropped (the OS
/// releases it if the process dies).
fn lock_cache(dir: &Path) -> Result<std::fs::File, String> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("ferrite images: waiting for another run using {}", dir.display());
            f.lock().map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
    }
    Ok(f)
}

/// Makes sure the images exist (downloading and building what is missing) and returns them.
pub fn ensure(opts: &Options) -> Result<GuestImages, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
    let _lock = lock_cache(&opts.dir)?;
    let current = opts.dir.join("current");
    let kpkg = match resolve_meta(&opts.meta) {
        Ok(p) => p,
        Err(e) => {
            // Offline or no package lists: the last good set, if there is one.
            if let Some(imgs) = read_current(&current)
                && !opts.rebuild
            {
                eprintln!("ferrite images: {e}; using the cached {}", imgs.package);
                return Ok(imgs);
            }
            return Err(e);
        }
    };
    let kroot = fetch_and_unpack(&opts.dir, &kpkg)?;
    let broot = fetch_and_unpack(&opts.dir, "busybox-static")?;
    let kname = kroot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let kernel = find_vmlinuz(&kroot)?;
    let mods_tag =
        if opts.modules.is_empty() { String::new() } else { format!("+{}", opts.modules.join(",")) };
    let files = read_extra_files(&opts.files)?;
    let files_tag =
        if files.is_empty() { String::new() } else { format!("+files-{:016x}", files_digest(&files)) };
    let initrd = opts.dir.join(format!("initrd-{kname}{mods_tag}{files_tag}.img"));
    let busybox_path = broot.join("bin/busybox");
    if opts.rebuild || !initrd.exists() {
        let busybox =
            std::fs::read(&busybox_path).map_err(|e| format!("busybox-static has no bin/busybox: {e}"))?;
        let modules = collect_modules(&kroot, &opts.modules)?;
        let img = build_initramfs(&busybox, &modules, &files)?;
        let tmp = initrd.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, &img).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &initrd).map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
        eprintln!("ferrite images: built {} ({} KiB)", initrd.display(), img.len() >> 10);
    }
    let imgs = GuestImages { kernel, initrd, package: kpkg, busybox: busybox_path };
    if files.is_empty() {
        // `current` is the offline fallback of the plain set only.
        let _ = std::fs::write(
            &current,
            format!(
                "{}\n{}\n{}\n{}\n",
                imgs.package,
                imgs.kernel.display(),
                imgs.initrd.display(),
                imgs.busybox.display()
            ),
        );
    }
    Ok(imgs)
}

fn read_current(path: &Path) -> Option<GuestImages> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut l = s.lines();
    let imgs = GuestImages {
        package: l.next()?.to_string(),
        kernel: PathBuf::from(l.next()?),
        initrd: PathBuf::from(l.next()?),
        busybox: PathBuf::from(l.next()?),
    };
    (imgs.kernel.exists() && imgs.initrd.exists()).then_some(imgs)
}

fn find_vmlinuz(root: &Path) -> Result<PathBuf, String> {
    let boot = root.join("boot");
    let rd = std::fs::read_dir(&boot).map_err(|e| format!("kernel package has no boot/: {e}"))?;
    rd.filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| format!("no vmlinuz-* in {}", boot.display()))
}

/// Parses `--add HOST:GUEST` (split at the last colon; the guest path is absolute or relative to `/`).
pub fn parse_add(arg: &str) -> Result<(String, PathBuf), String> {
    let (host, guest) =
        arg.rsplit_once(':').ok_or_else(|| format!("--add {arg}: expected HOSTFILE:GUESTPATH"))?;
    let rel = guest.trim_start_matches('/');
    let parts: Vec<&str> = rel.split('/').collect();
    if host.is_empty() || rel.is_empty() || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return Err(format!("--add {arg}: the guest path must name a file, without empty, . or .. parts"));
    }
    Ok((rel.to_string(), PathBuf::from(host)))
}

/// Reads the `--add` files: (path in the archive, contents).
fn read_extra_files(files: &[(String, PathBuf)]) -> Result<Vec<(String, Vec<u8>)>, String> {
    files
        .iter()
        .map(|(guest, host)| {
            std::fs::read(host)
                .map(|d| (guest.clone(), d))
                .map_err(|e| format!("--add {}: {e}", host.display()))
        })
        .collect()
}

/// FNV-1a over the extra files' names and contents: the cache key of an initramfs that carries them.
fn files_digest(files: &[(String, Vec<u8>)]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (name, data) in files {
        for b in name.bytes().chain([0]).chain(data.iter().copied()).chain((data.len() as u64).to_le_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The `.ko` files for `names` and everything they depend on, dependencies first: (name, contents).
fn collect_modules(kroot: &Path, names: &[String]) -> Result<Vec<(String, Vec<u8>)>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut index = std::collections::HashMap::new();
    let mut stack = vec![kroot.join("lib/modules")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko"))
            {
                index.insert(n.replace('-', "_"), p);
            }
        }
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    fn add(
        name: &str,
        index: &std::collections::HashMap<String, PathBuf>,
        out: &mut Vec<(String, Vec<u8>)>,
        depth: usize,
    ) -> Result<(), String> {
        let key = name.replace('-', "_");
        if out.iter().any(|(n, _)| *n == key) {
            return Ok(());
        }
        if depth > 32 {
            return Err(format!("module dependency loop at {name}"));
        }
        let path = index.get(&key).ok_or_else(|| format!("the kernel package has no module {name}"))?;
        let ko = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for dep in modinfo_depends(&ko) {
            add(&dep, index, out, depth + 1)?;
        }
        out.push((key, ko));
        Ok(())
    }
    for n in names {
        add(n, &index, &mut out, 0)?;
    }
    Ok(out)
}

/// The `depends=` list in a module's `.modinfo` strings.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let pat = b"\0depends=";
    let Some(i) = ko.windows(pat.len()).position(|w| w == pat) else { return Vec::new() };
    let rest = &ko[i + pat.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The `/init` script.
fn init_script(modules: &[(String, Vec<u8>)]) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         # Ferrite's guest init (written by `ferrite images`).\n\
         /bin/busybox --install -s\n\
         export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\n",
    );
    for (name, _) in modules {
        s.push_str(&format!("insmod /lib/modules/{name}.ko || echo \"init: cannot load {name}\"\n"));
    }
    s.push_str(&format!("echo {READY_MARKER}\n"));
    // busybox init (inittab below) keeps a shell on the console and carries out poweroff/reboot.
    s.push_str("exec /sbin/init\n");
    s
}

const INITTAB: &str = "::respawn:/bin/cttyhack /bin/sh -l\n::ctrlaltdel:/sbin/reboot\n::shutdown:/bin/sync\n";
const PROFILE: &str = "export PS1='\\w # '\n";

/// The standard directories of the initramfs.
const DIRS: [&str; 13] =
    [".", "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root", "lib"];

/// The gzip-compressed newc archive with busybox, `/init`, its configuration, `modules` and the extra
/// executable `files` (path relative to `/`, contents).
pub fn build_initramfs(
    busybox: &[u8],
    modules: &[(String, Vec<u8>)],
    files: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, String> {
    let mut c = Cpio::default();
    for d in DIRS {
        c.dir(d);
    }
    // The console node, so the kernel can open init's stdin/stdout before devtmpfs is mounted.
    c.node("dev/console", 0o020600, 5, 1, &[]);
    c.file("bin/busybox", 0o755, busybox);
    c.symlink("sbin/init", "/bin/busybox");
    c.file("init", 0o755, init_script(modules).as_bytes());
    c.file("etc/inittab", 0o644, INITTAB.as_bytes());
    c.file("etc/profile", 0o644, PROFILE.as_bytes());
    if !modules.is_empty() {
        c.dir("lib/modules");
        for (name, ko) in modules {
            c.file(&format!("lib/modules/{name}.ko"), 0o644, ko);
        }
    }
    let mut made: Vec<String> = DIRS.iter().map(|d| d.to_string()).collect();
    for (path, data) in files {
        // Parent directories first, each once.
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map_or(&[][..], |(_, p)| p) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !made.contains(&parent) {
                c.dir(&parent);
                made.push(parent.clone());
            }
        }
        c.file(path, 0o755, data);
    }
    let cpio = c.finish();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&cpio).map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

/// A newc ("070701") cpio writer.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    /// A device node (`mode` includes the file type bits).
    pub fn node(&mut self, name: &str, mode: u32, major: u32, minor: u32, data: &[u8]) {
        self.entry(name, mode, (major, minor), data);
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// `ferrite images` arguments.
#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Cache directory (default: `<target dir>/guest-images`, or $FERRITE_IMAGES).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Kernel meta-package to resolve (linux-image-cloud-amd64 or linux-image-amd64).
    #[arg(long, default_value = DEFAULT_META)]
    pub package: String,
    /// A kernel module to include and load at boot, with its dependencies (repeatable).
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Rebuild the initramfs even when a cached one exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Put a host file into the initramfs, executable, at GUESTPATH (repeatable), e.g.
    /// `--add ./mytest:/bin/mytest`. The initramfs with extra files is cached under its own name.
    #[arg(long = "add", value_name = "HOSTFILE:GUESTPATH", value_parser = parse_add)]
    pub files: Vec<(String, PathBuf)>,
    /// Fetch only Debian's SeaBIOS (the firmware of disk and CD boots) and print `bios=` and `vgabios=`.
    #[arg(long)]
    pub seabios: bool,
    /// Fetch only Debian's SYSLINUX boot loaders (syslinux, syslinux-common, isolinux) and print
    /// `installer=`, `mbr=`, `isolinux=` and `ldlinux_c32=`.
    #[arg(long, conflicts_with = "seabios")]
    pub syslinux: bool,
    /// Fetch only Debian's memtest86+ and print `iso=` and `bin=`.
    #[arg(long, conflicts_with_all = ["seabios", "syslinux"])]
    pub memtest: bool,
}

impl ImagesArgs {
    /// The options these arguments ask for.
    pub fn options(&self) -> Options {
        Options {
            dir: self.dir.clone().unwrap_or_else(default_dir),
            meta: self.package.clone(),
            modules: self.modules.clone(),
            rebuild: self.rebuild,
            files: self.files.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two users of one cache directory take turns: the second waits until the first lets go (the
    /// fresh-cache CI failure came from three tests downloading into one `debs/` at once).
    #[test]
    fn cache_lock_excludes_a_second_user_until_released() {
        let dir = std::env::temp_dir().join(format!("ferrite-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock_cache(&dir).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = dir.clone();
        let t = std::thread::spawn(move || {
            let second = lock_cache(&d2).unwrap();
            tx.send(()).unwrap();
            drop(second);
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(),
            "a second user got the cache lock while the first held it"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the second user never got the lock");
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn depends_parsing() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(out, "linux-image-cloud-amd64").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n", "linux-image-amd64"), None);
    }

    #[test]
    fn modinfo_depends_list() {
        let ko = b"\x7fELF....\0license=GPL\0depends=virtio,virtio_ring\0name=x\0";
        assert_eq!(modinfo_depends(ko), vec!["virtio".to_string(), "virtio_ring".to_string()]);
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
        assert!(modinfo_depends(b"nothing").is_empty());
    }

    /// Parses a newc archive back: (name, mode, rdev major, data).
    fn parse_newc(mut b: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        let mut off = 0usize;
        loop {
            assert_eq!(&b[..6], b"070701");
            let f = |i: usize| hex(&b[6 + i * 8..14 + i * 8]);
            let (mode, size, rmaj, namesize) = (f(1), f(6) as usize, f(9), f(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_at = (off + 110 + namesize).next_multiple_of(4) - off;
            let data = b[data_at..data_at + size].to_vec();
            let next = (off + data_at + size).next_multiple_of(4) - off;
            if name == "TRAILER!!!" {
                return v;
            }
            v.push((name, mode, rmaj, data));
            b = &b[next..];
            off += next;
        }
    }

    #[test]
    fn initramfs_is_a_gzip_newc_archive() {
        use std::io::Read;
        let extra = [("opt/t/check".to_string(), b"ELF".to_vec()), ("bin/two".to_string(), b"2".to_vec())];
        let gz = build_initramfs(b"BUSYBOX", &[("dummy".into(), b"KO".to_vec())], &extra).unwrap();
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut cpio).unwrap();
        assert_eq!(cpio.len() % 4, 0);
        let entries = parse_newc(&cpio);
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap_or_else(|| panic!("{n} missing"));
        assert_eq!(get("bin/busybox").3, b"BUSYBOX");
        assert_eq!(get("bin/busybox").1, 0o100755);
        assert_eq!(get("dev/console").1, 0o020600);
        assert_eq!(get("dev/console").2, 5);
        assert_eq!(get("sbin/init").3, b"/bin/busybox");
        let init = String::from_utf8(get("init").3.clone()).unwrap();
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("mount -t devtmpfs"));
        assert!(init.contains("insmod /lib/modules/dummy.ko"));
        assert!(init.contains(&format!("echo {READY_MARKER}")));
        assert_eq!(get("lib/modules/dummy.ko").3, b"KO");
        assert_eq!(get(".").1, 0o040755);
        // Extra files: executable, parents created once and before the file, standard dirs not repeated.
        assert_eq!(get("opt/t/check").3, b"ELF");
        assert_eq!(get("opt/t/check").1, 0o100755);
        let pos = |n: &str| entries.iter().position(|e| e.0 == n).unwrap();
        assert!(pos("opt") < pos("opt/t") && pos("opt/t") < pos("opt/t/check"));
        assert_eq!(entries.iter().filter(|e| e.0 == "bin").count(), 1);
        assert_eq!(get("bin/two").3, b"2");
    }

    #[test]
    fn add_argument_parsing() {
        assert_eq!(parse_add("/tmp/a:b:/bin/x").unwrap(), ("bin/x".to_string(), PathBuf::from("/tmp/a:b")));
        assert_eq!(parse_add("f:opt/y").unwrap(), ("opt/y".to_string(), PathBuf::from("f")));
        for bad in ["nocolon", ":/bin/x", "f:/", "f:/bin/../etc/passwd", "f:/bin//x", "f:./x"] {
            assert!(parse_add(bad).is_err(), "{bad} accepted");
        }
        let a = [("x".to_string(), b"1".to_vec())];
        let b = [("x".to_string(), b"2".to_vec())];
        assert_ne!(files_digest(&a), files_digest(&b));
    }
}
