//! Host-side throughput of the image backends: `cargo run --release -p storage --example image_bench
//! -- DIR`. Writes a 256 MiB raw and qcow2 image in DIR (sequential 1 MiB writes, then random 4 KiB
//! reads and writes) and prints MiB/s and IOPS. Not a guest benchmark: what the controllers can get
//! from the backend at most.

use std::time::Instant;

use storage::backend::create_image;
use storage::{BlockBackend, ImageBackend, ImageFormat, ImageOptions};

const SIZE: u64 = 256 << 20;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| std::env::temp_dir().display().to_string());
    for format in [ImageFormat::Raw, ImageFormat::Qcow2] {
        let path = std::path::Path::new(&dir).join(format!("ferrite-bench.{}", format.name()));
        let _ = std::fs::remove_file(&path);
        create_image(&path, format, SIZE).expect("create image");
        let opts =
            ImageOptions { path: path.clone(), format: Some(format), read_only: false, snapshot: false };
        let mut b = ImageBackend::open(&opts).expect("open");
        let buf = vec![0x5Au8; 1 << 20];
        let t = Instant::now();
        for i in 0..SIZE >> 20 {
            b.write(i << 20, &buf).unwrap();
        }
        b.flush().unwrap();
        let seq_w = (SIZE >> 20) as f64 / t.elapsed().as_secs_f64();
        let mut small = vec![0u8; 4096];
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (SIZE / 4096)) * 4096
        };
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            b.read(next(), &mut small).unwrap();
        }
        let rr = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            b.write(next(), &small).unwrap();
        }
        b.flush().unwrap();
        let rw = n as f64 / t.elapsed().as_secs_f64();
        println!(
            "{:5}: sequential 1 MiB writes {seq_w:7.0} MiB/s, random 4 KiB reads {rr:8.0} IOPS, random 4 KiB writes {rw:8.0} IOPS",
            format.name()
        );
        drop(b);
        let _ = std::fs::remove_file(&path);
    }
}
