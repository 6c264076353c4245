//! Durability: a process writing through [`ImageBackend`] is killed with SIGKILL; what it flushed is in
//! the image, and a qcow2 image is still consistent (`qemu-img check`) whatever it had not flushed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use storage::{BlockBackend, ImageBackend, ImageFormat, ImageOptions};

const ENV: &str = "FERRITE_DURABILITY_IMAGE";
const FLUSHED_AT: u64 = 0;
/// In another L1 slot (an L2 table maps 512 MiB with 64 KiB clusters), so the unflushed write allocates
/// an L2 table: the case imago orders wrongly (see `storage::qcow2_guard`).
const UNFLUSHED_AT: u64 = 600 << 20;
const LEN: usize = 1 << 20;

fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN).map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i >> 9) as u8).collect()
}

/// The writer, run as a child of [`sigkill_keeps_flushed_data`] (it never returns by itself).
#[test]
#[ignore = "runs only as the child process of sigkill_keeps_flushed_data"]
fn child_writer() {
    let path = std::env::var(ENV).expect("started by sigkill_keeps_flushed_data");
    let (path, format) = path.split_once('|').unwrap();
    let format = if format == "qcow2" { ImageFormat::Qcow2 } else { ImageFormat::Raw };
    let opts = ImageOptions { path: path.into(), format: Some(format), read_only: false, snapshot: false };
    let mut b = ImageBackend::open(&opts).unwrap();
    b.write(FLUSHED_AT, &pattern(1)).unwrap();
    b.flush().unwrap();
    println!("FLUSHED");
    b.write(UNFLUSHED_AT, &pattern(2)).unwrap();
    println!("WROTE");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn run_child_and_kill(path: &Path, format: &str) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ENV, format!("{}|{format}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        let done = line.contains("WROTE");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(seen.iter().any(|l| l.contains("FLUSHED")), "child output: {seen:?}");
}

#[test]
fn sigkill_keeps_flushed_data() {
    let qemu_img = Command::new("qemu-img").arg("--version").output().is_ok_and(|o| o.status.success());
    let dir = std::env::temp_dir().join(format!("ferrite-durability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let formats: &[&str] = if qemu_img { &["raw", "qcow2"] } else { &["raw"] };
    if !qemu_img {
        eprintln!("qcow2 part skipped: qemu-img is not installed (scripts/setup.sh installs qemu-utils)");
    }
    for &format in formats {
        let img = dir.join(format!("disk.{format}"));
        if format == "qcow2" {
            let st = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1G"])
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            std::fs::File::create(&img).unwrap().set_len(1 << 30).unwrap();
        }
        run_child_and_kill(&img, format);
        let raw = if format == "qcow2" {
            // 0: clean; 3: only leaked clusters (allocated but unreferenced: wasted space, no data at risk).
            let check = Command::new("qemu-img").args(["check", img.to_str().unwrap()]).output().unwrap();
            let code = check.status.code();
            if std::env::var("FERRITE_SHOW_CHECK").is_ok() {
                eprintln!("{}", String::from_utf8_lossy(&check.stdout));
            }
            assert!(
                code == Some(0) || code == Some(3),
                "qemu-img check after SIGKILL: {code:?}\n{}",
                String::from_utf8_lossy(&check.stdout)
            );
            let out = dir.join("out.raw");
            let st = Command::new("qemu-img")
                .args(["dd", "-f", "qcow2", "-O", "raw", "bs=1M", "count=1"])
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", out.display()))
                .status()
                .unwrap();
            assert!(st.success());
            std::fs::read(&out).unwrap()
        } else {
            let mut head = vec![0u8; LEN];
            std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&img).unwrap(), &mut head, 0)
                .unwrap();
            head
        };
        assert_eq!(&raw[..LEN], &pattern(1)[..], "{format}: flushed data survives SIGKILL");
        // The image opens again (the dead process's lock went with it).
        let opts = ImageOptions { path: img.clone(), format: None, read_only: false, snapshot: false };
        ImageBackend::open(&opts).expect("reopen after SIGKILL");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
