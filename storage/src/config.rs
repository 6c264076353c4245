//! Disk options as the command line gives them (QEMU's `-drive` subset), and building the controllers
//! from them.
//!
//! `--disk path[,if=ide|ahci][,media=disk|cdrom][,format=raw|qcow2][,readonly=on|off][,snapshot=on|off]`:
//! a `,,` in the path is a literal comma, as in QEMU. `--hda`, `--hdb` and `--cdrom` are IDE primary
//! master, primary slave and secondary master, as QEMU's shorthands. Other IDE disks take the free
//! positions in the order primary master, primary slave, secondary master, secondary slave; AHCI disks
//! take ports 0-5 in order. A CD-ROM is always read-only. Every error is one line.

use std::path::PathBuf;

use crate::ahci::{Ahci, PORTS};
use crate::ata::Drive;
use crate::backend::{ImageBackend, ImageFormat, ImageOptions};
use crate::ide::IdeController;

/// Which controller a disk hangs off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    /// PIIX3 IDE.
    Ide,
    /// ICH9 AHCI.
    Ahci,
}

/// What kind of drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// A hard disk.
    Disk,
    /// A CD-ROM drive (ATAPI).
    Cdrom,
}

/// One `--disk` (or shorthand).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The image.
    pub path: PathBuf,
    /// Controller.
    pub interface: Interface,
    /// Drive kind.
    pub media: Media,
    /// Image format (None: probe).
    pub format: Option<ImageFormat>,
    /// Guest writes refused.
    pub read_only: bool,
    /// Writes go to a temporary overlay.
    pub snapshot: bool,
    /// Fixed IDE position (0-3), for the shorthands.
    pub index: Option<usize>,
}

impl DiskSpec {
    /// A writable IDE hard disk at `path`.
    pub fn new(path: impl Into<PathBuf>) -> DiskSpec {
        DiskSpec {
            path: path.into(),
            interface: Interface::Ide,
            media: Media::Disk,
            format: None,
            read_only: false,
            snapshot: false,
            index: None,
        }
    }

    /// `--hda` (0), `--hdb` (1) or `--cdrom` (2).
    pub fn shorthand(path: impl Into<PathBuf>, index: usize) -> DiskSpec {
        let media = if index == 2 { Media::Cdrom } else { Media::Disk };
        DiskSpec { index: Some(index), media, read_only: media == Media::Cdrom, ..DiskSpec::new(path) }
    }

    /// Parses a `--disk` value.
    pub fn parse(spec: &str) -> Result<DiskSpec, String> {
        let parts = split_options(spec);
        let mut it = parts.into_iter();
        let path = it.next().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("--disk '{spec}': no image path"));
        }
        let mut d = DiskSpec::new(path);
        let mut seen: Vec<String> = Vec::new();
        let mut read_only = None;
        for opt in it {
            let (k, v) =
                opt.split_once('=').ok_or_else(|| format!("--disk '{spec}': '{opt}' is not key=value"))?;
            if seen.iter().any(|s| s == k) {
                return Err(format!("--disk '{spec}': '{k}' given twice"));
            }
            seen.push(k.to_string());
            let bad = |what: &str| format!("--disk '{spec}': {k}={v} is not valid (expected {what})");
            match k {
                "if" => {
                    d.interface = match v {
                        "ide" => Interface::Ide,
                        "ahci" | "sata" => Interface::Ahci,
                        _ => return Err(bad("ide or ahci")),
                    }
                }
                "media" => {
                    d.media = match v {
                        "disk" => Media::Disk,
                        "cdrom" => Media::Cdrom,
                        _ => return Err(bad("disk or cdrom")),
                    }
                }
                "format" => {
                    d.format = Some(match v {
                        "raw" => ImageFormat::Raw,
                        "qcow2" => ImageFormat::Qcow2,
                        _ => return Err(bad("raw or qcow2")),
                    })
                }
                "readonly" => read_only = Some(on_off(v).ok_or_else(|| bad("on or off"))?),
                "snapshot" => d.snapshot = on_off(v).ok_or_else(|| bad("on or off"))?,
                _ => {
                    return Err(format!(
                        "--disk '{spec}': unknown option '{k}' (known: if, media, format, readonly, snapshot)"
                    ));
                }
            }
        }
        if d.media == Media::Cdrom {
            if read_only == Some(false) {
                return Err(format!("--disk '{spec}': a CD-ROM cannot be writable"));
            }
            d.read_only = true;
        } else {
            d.read_only = read_only.unwrap_or(false);
        }
        Ok(d)
    }

    fn open(&self, serial: &str) -> Result<Drive, String> {
        let opts = ImageOptions {
            path: self.path.clone(),
            format: self.format,
            read_only: self.read_only,
            snapshot: self.snapshot && !self.read_only,
        };
        let b = Box::new(ImageBackend::open(&opts)?);
        Ok(match self.media {
            Media::Disk => Drive::disk(b, serial),
            Media::Cdrom => Drive::cdrom(Some(b), serial),
        })
    }
}

fn on_off(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "true" => Some(true),
        "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Splits at single commas; `,,` is a literal comma.
fn split_options(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(p) = out.last_mut() {
                    p.push(',');
                }
            } else {
                out.push(String::new());
            }
        } else if let Some(p) = out.last_mut() {
            p.push(c);
        }
    }
    out
}

/// The controllers with their drives.
pub struct Controllers {
    /// The IDE controller (always present on the board; maybe without drives).
    pub ide: IdeController,
    /// The AHCI controller, when some disk asked for it.
    pub ahci: Option<Ahci>,
}

/// Where the board puts the AHCI function: 00:05.0 (00:02.0 is `edu`'s; QEMU's `-device ich9-ahci`
/// on an i440FX board also takes the first free slot, so guests find it by class, not by slot).
pub const AHCI_DEVFN: u8 = 5 << 3;

/// Disks with their positions.
pub type Placed<'a> = Vec<(usize, &'a DiskSpec)>;

/// Where each disk goes: IDE positions 0-3 (channel * 2 + unit) and AHCI ports. Errors name the disk.
pub fn assign(specs: &[DiskSpec]) -> Result<(Placed<'_>, Placed<'_>), String> {
    let mut ide: [Option<&DiskSpec>; 4] = [None; 4];
    for s in specs.iter().filter(|s| s.index.is_some()) {
        let i = s.index.unwrap_or(0);
        if i >= 4 || ide[i].is_some() {
            return Err(format!("{}: IDE position {i} is already taken", s.path.display()));
        }
        ide[i] = Some(s);
    }
    let mut ahci = Vec::new();
    for s in specs.iter().filter(|s| s.index.is_none()) {
        match s.interface {
            Interface::Ide => {
                let Some(slot) = ide.iter().position(|x| x.is_none()) else {
                    return Err(format!("{}: all four IDE positions are taken", s.path.display()));
                };
                ide[slot] = Some(s);
            }
            Interface::Ahci => {
                if ahci.len() == PORTS {
                    return Err(format!("{}: all {PORTS} AHCI ports are taken", s.path.display()));
                }
                ahci.push((ahci.len(), s));
            }
        }
    }
    let ide = ide.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s))).collect();
    Ok((ide, ahci))
}

/// Opens every image and builds the controllers.
pub fn build(specs: &[DiskSpec]) -> Result<Controllers, String> {
    let (ide_pos, ahci_pos) = assign(specs)?;
    let mut ide = IdeController::new();
    for (i, s) in ide_pos {
        ide.attach(i / 2, i % 2, s.open(&format!("FERRITE-IDE{i}"))?);
    }
    let ahci = if ahci_pos.is_empty() {
        None
    } else {
        let mut drives: Vec<Option<Drive>> = (0..PORTS).map(|_| None).collect();
        for (p, s) in ahci_pos {
            drives[p] = Some(s.open(&format!("FERRITE-SATA{p}"))?);
        }
        Some(Ahci::new(drives))
    };
    Ok(Controllers { ide, ahci })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let d = DiskSpec::parse("a.img").unwrap();
        assert_eq!(d, DiskSpec::new("a.img"));
        let d = DiskSpec::parse("dir,,x/b.qcow2,if=ahci,format=qcow2,readonly=on,snapshot=on").unwrap();
        assert_eq!(d.path, PathBuf::from("dir,x/b.qcow2"));
        assert_eq!(d.interface, Interface::Ahci);
        assert_eq!(d.format, Some(ImageFormat::Qcow2));
        assert!(d.read_only && d.snapshot);
        let c = DiskSpec::parse("x.iso,media=cdrom").unwrap();
        assert!(c.read_only && c.media == Media::Cdrom);
    }

    #[test]
    fn bad_specs_are_one_line_errors() {
        for (spec, needle) in [
            ("", "no image path"),
            (",if=ide", "no image path"),
            ("a,if=scsi", "if=scsi"),
            ("a,format=vmdk", "format=vmdk"),
            ("a,media=tape", "media=tape"),
            ("a,readonly=maybe", "readonly=maybe"),
            ("a,cache=none", "unknown option 'cache'"),
            ("a,if=ide,if=ahci", "given twice"),
            ("a,snapshot", "not key=value"),
            ("a,media=cdrom,readonly=off", "cannot be writable"),
        ] {
            let e = DiskSpec::parse(spec).unwrap_err();
            assert!(e.contains(needle) && !e.contains('\n'), "{spec}: {e}");
        }
    }

    #[test]
    fn positions() {
        let specs = vec![
            DiskSpec::parse("c").unwrap(),
            DiskSpec::shorthand("a", 0),
            DiskSpec::parse("s0,if=ahci").unwrap(),
            DiskSpec::shorthand("cd", 2),
            DiskSpec::parse("d").unwrap(),
            DiskSpec::parse("s1,if=ahci").unwrap(),
        ];
        let (ide, ahci) = assign(&specs).unwrap();
        let names: Vec<_> = ide.iter().map(|(i, s)| (*i, s.path.to_str().unwrap())).collect();
        assert_eq!(names, vec![(0, "a"), (1, "c"), (2, "cd"), (3, "d")]);
        let names: Vec<_> = ahci.iter().map(|(i, s)| (*i, s.path.to_str().unwrap())).collect();
        assert_eq!(names, vec![(0, "s0"), (1, "s1")]);
        let mut five = specs.clone();
        five.push(DiskSpec::parse("e").unwrap());
        assert!(assign(&five).unwrap_err().contains("all four IDE positions"));
        let twice = vec![DiskSpec::shorthand("a", 0), DiskSpec::shorthand("b", 0)];
        assert!(assign(&twice).unwrap_err().contains("already taken"));
        let many: Vec<_> = (0..7).map(|i| DiskSpec::parse(&format!("s{i},if=ahci")).unwrap()).collect();
        assert!(assign(&many).unwrap_err().contains("AHCI ports"));
    }

    #[test]
    fn build_opens_and_reports_missing_images() {
        let e = build(&[DiskSpec::new("/nonexistent/disk.img")]).err().unwrap();
        assert!(e.contains("/nonexistent/disk.img") && !e.contains('\n'), "{e}");
        let p = std::env::temp_dir().join(format!("ferrite-config-{}.img", std::process::id()));
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let c = build(&[
            DiskSpec::new(&p),
            DiskSpec::parse(&format!("{},if=ahci,readonly=on", p.display())).unwrap(),
        ]);
        // The same image writable on IDE and read-only on AHCI: the second open is refused by the lock.
        assert!(c.is_err());
        let mut c = build(&[DiskSpec::new(&p)]).ok().unwrap();
        assert!(c.ahci.is_none());
        assert_eq!(c.ide.drive_mut(0, 0).unwrap().capacity(), 2048);
        drop(c);
        std::fs::remove_file(&p).unwrap();
    }
}
