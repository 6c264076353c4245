//! Image backends against images made and checked by `qemu-img`.

use std::path::{Path, PathBuf};
use std::process::Command;

use storage::{BlockBackend, ImageBackend, ImageFormat, ImageOptions};

fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: qemu-img is not installed (scripts/setup.sh installs qemu-utils)");
    }
    ok
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ferrite-storage-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().expect("qemu-img runs")
}

fn qemu_img_ok(args: &[&str]) {
    let out = qemu_img(args);
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A deterministic pattern: each 512-byte sector starts with its number.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i % 512 < 8 { ((i / 512) >> (8 * (i % 512))) as u8 } else { (i as u8).wrapping_mul(31) ^ seed }
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn opts(p: &Path, format: ImageFormat) -> ImageOptions {
    ImageOptions { path: p.to_path_buf(), format: Some(format), read_only: false, snapshot: false }
}

/// The guest-visible contents of any image, through qemu-img.
fn contents(p: &Path, dir: &TempDir) -> Vec<u8> {
    let out = dir.path("converted.raw");
    let _ = std::fs::remove_file(&out);
    qemu_img_ok(&["convert", "-O", "raw", s(p), s(&out)]);
    std::fs::read(&out).unwrap()
}

#[test]
fn raw_read_write_flush() {
    let dir = TempDir::new("raw");
    let p = dir.path("disk.raw");
    std::fs::write(&p, pattern(1 << 20, 1)).unwrap();
    let mut b = ImageBackend::open(&opts(&p, ImageFormat::Raw)).unwrap();
    assert_eq!(b.size(), 1 << 20);
    let mut buf = vec![0u8; 1024];
    b.read(4096, &mut buf).unwrap();
    assert_eq!(buf, pattern(1 << 20, 1)[4096..5120]);
    b.write(512 * 7, &[0xAB; 512]).unwrap();
    b.flush().unwrap();
    let on_disk = std::fs::read(&p).unwrap();
    assert!(on_disk[512 * 7..512 * 8].iter().all(|&x| x == 0xAB));
    // Past the end is an error, never a panic or a short transfer.
    assert!(b.read((1 << 20) - 512, &mut buf).is_err());
    assert!(b.write(u64::MAX - 10, &[0; 512]).is_err());
}

#[test]
fn qcow2_write_passes_qemu_img_check() {
    if !have_qemu_img() {
        return;
    }
    let dir = TempDir::new("qcow2");
    let p = dir.path("disk.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", s(&p), "8M"]);
    let data = pattern(3 << 20, 7);
    {
        let mut b = ImageBackend::open(&ImageOptions::new(&p)).unwrap();
        assert_eq!(b.format(), ImageFormat::Qcow2, "probed");
        assert_eq!(b.size(), 8 << 20);
        // Unaligned to clusters, spanning several, and a rewrite.
        b.write(512 * 3, &data).unwrap();
        b.write(512 * 3, &data[..512]).unwrap();
        b.flush().unwrap();
        let mut back = vec![0u8; data.len()];
        b.read(512 * 3, &mut back).unwrap();
        assert_eq!(back, data);
    }
    qemu_img_ok(&["check", "-q", s(&p)]);
    let c = contents(&p, &dir);
    assert_eq!(&c[512 * 3..512 * 3 + data.len()], &data[..]);
    assert!(c[..512 * 3].iter().all(|&x| x == 0));
}

#[test]
fn qcow2_backing_file_stays_untouched() {
    if !have_qemu_img() {
        return;
    }
    let dir = TempDir::new("backing");
    let base = dir.path("base.raw");
    let base_data = pattern(2 << 20, 3);
    std::fs::write(&base, &base_data).unwrap();
    let ov = dir.path("overlay.qcow2");
    qemu_img_ok(&["create", "-q", "-f", "qcow2", "-b", s(&base), "-F", "raw", s(&ov)]);
    {
        let mut b = ImageBackend::open(&opts(&ov, ImageFormat::Qcow2)).unwrap();
        let mut buf = vec![0u8; 4096];
        b.read(65536 - 1024, &mut buf).unwrap();
        assert_eq!(buf, base_data[65536 - 1024..65536 + 3072], "reads fall through to the base");
        b.write(65536, &[0x5A; 1024]).unwrap();
        b.read(65536 - 1024, &mut buf).unwrap();
        assert_eq!(buf[..1024], base_data[65536 - 1024..65536]);
        assert!(buf[1024..2048].iter().all(|&x| x == 0x5A));
        assert_eq!(buf[2048..], base_data[65536 + 1024..65536 + 3072], "copy-on-write keeps the rest");
    }
    assert_eq!(std::fs::read(&base).unwrap(), base_data, "base unchanged");
    {
        // While the overlay is open, its base is read-locked: nobody may write it, reading is fine.
        let _ov = ImageBackend::open(&opts(&ov, ImageFormat::Qcow2)).unwrap();
        let e = ImageBackend::open(&opts(&base, ImageFormat::Raw)).unwrap_err();
        assert!(e.contains("in use"), "{e}");
        ImageBackend::open(&ImageOptions { read_only: true, ..opts(&base, ImageFormat::Raw) }).unwrap();
    }
    ImageBackend::open(&opts(&base, ImageFormat::Raw)).expect("base unlocked with the overlay closed");
    qemu_img_ok(&["check", "-q", s(&ov)]);
    let c = contents(&ov, &dir);
    assert!(c[65536..65536 + 1024].iter().all(|&x| x == 0x5A));
    assert_eq!(c[..65536], base_data[..65536]);
}

#[test]
fn qcow2_compressed_clusters_read() {
    if !have_qemu_img() {
        return;
    }
    let dir = TempDir::new("compressed");
    let raw = dir.path("src.raw");
    let data = pattern(1 << 20, 9);
    std::fs::write(&raw, &data).unwrap();
    let q = dir.path("c.qcow2");
    qemu_img_ok(&["convert", "-c", "-f", "raw", "-O", "qcow2", s(&raw), s(&q)]);
    let qlen = std::fs::metadata(&q).unwrap().len();
    assert!(qlen < data.len() as u64, "the image really is compressed ({qlen} bytes)");
    let mut b =
        ImageBackend::open(&ImageOptions { read_only: true, ..opts(&q, ImageFormat::Qcow2) }).unwrap();
    let mut back = vec![0u8; data.len()];
    b.read(0, &mut back).unwrap();
    assert_eq!(back, data);
    assert!(b.write(0, &[0; 512]).is_err(), "read-only refuses writes");
    drop(b);
    // Writing over a compressed cluster allocates a normal one.
    {
        let mut b = ImageBackend::open(&opts(&q, ImageFormat::Qcow2)).unwrap();
        b.write(70000 - 70000 % 512, &[0xEE; 512]).unwrap();
    }
    qemu_img_ok(&["check", "-q", s(&q)]);
    let c = contents(&q, &dir);
    let at = 70000 - 70000 % 512;
    assert!(c[at..at + 512].iter().all(|&x| x == 0xEE));
    assert_eq!(c[..at], data[..at]);
    assert_eq!(c[at + 512..], data[at + 512..]);
}

#[test]
fn second_writer_is_refused() {
    let dir = TempDir::new("lock");
    let p = dir.path("disk.raw");
    std::fs::write(&p, vec![0u8; 65536]).unwrap();
    let first = ImageBackend::open(&opts(&p, ImageFormat::Raw)).unwrap();
    let e = ImageBackend::open(&opts(&p, ImageFormat::Raw)).unwrap_err();
    assert!(e.contains("in use by another process") && !e.contains('\n'), "{e}");
    let ro = ImageOptions { read_only: true, ..opts(&p, ImageFormat::Raw) };
    assert!(ImageBackend::open(&ro).is_err(), "a reader is refused while someone writes");
    if have_qemu_img() {
        // QEMU sees Ferrite's lock too: qemu-io (from the same package) cannot open it for writing.
        let out = Command::new("qemu-io").args(["-f", "raw", "-c", "write 0 512", s(&p)]).output().unwrap();
        assert!(!out.status.success(), "qemu-io wrote an image Ferrite writes");
        assert!(String::from_utf8_lossy(&out.stderr).contains("lock"));
    }
    drop(first);
    let r1 = ImageBackend::open(&ro).unwrap();
    let r2 = ImageBackend::open(&ro).expect("two readers coexist");
    assert!(ImageBackend::open(&opts(&p, ImageFormat::Raw)).is_err(), "a writer is refused while read");
    drop((r1, r2));
    ImageBackend::open(&opts(&p, ImageFormat::Raw)).expect("lock released on close");
}

#[test]
fn snapshot_writes_are_dropped() {
    if !have_qemu_img() {
        return;
    }
    let dir = TempDir::new("snapshot");
    for format in [ImageFormat::Raw, ImageFormat::Qcow2] {
        let p = dir.path(&format!("disk.{}", format.name()));
        let data = pattern(1 << 20, 5);
        let src = dir.path("src.raw");
        std::fs::write(&src, &data).unwrap();
        qemu_img_ok(&["convert", "-f", "raw", "-O", format.name(), s(&src), s(&p)]);
        let before = std::fs::read(&p).unwrap();
        {
            let o = ImageOptions { snapshot: true, ..opts(&p, format) };
            let mut b = ImageBackend::open(&o).unwrap();
            b.write(0, &[0x77; 4096]).unwrap();
            b.flush().unwrap();
            let mut buf = vec![0u8; 8192];
            b.read(0, &mut buf).unwrap();
            assert!(buf[..4096].iter().all(|&x| x == 0x77));
            assert_eq!(buf[4096..], data[4096..8192]);
            // Another process may write the image meanwhile? No: snapshot holds a read lock.
            assert!(ImageBackend::open(&opts(&p, format)).is_err());
        }
        assert_eq!(std::fs::read(&p).unwrap(), before, "{format:?} image unchanged");
        let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("ferrite-snapshot-{}-", std::process::id()))
            })
            .collect();
        assert!(leftovers.is_empty(), "overlay files left behind: {leftovers:?}");
    }
}

#[test]
fn bad_images_give_one_line_errors() {
    let dir = TempDir::new("bad");
    let missing = dir.path("missing.img");
    let e = ImageBackend::open(&ImageOptions::new(&missing)).unwrap_err();
    assert!(e.contains("missing.img") && !e.contains('\n'), "{e}");
    let junk = dir.path("junk.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend_from_slice(&[0xFF; 60]);
    std::fs::write(&junk, &bytes).unwrap();
    let e = ImageBackend::open(&ImageOptions::new(&junk)).unwrap_err();
    assert!(e.contains("qcow2"), "{e}");
    let e = ImageBackend::open(&ImageOptions::new(dir.path(""))).unwrap_err();
    assert!(!e.is_empty());
}
