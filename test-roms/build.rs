//! Assembles every `src/roms/*.asm` (flat 64 KiB ROMs) and every `src/kernels/*.asm` (multiboot kernels:
//! flat images with the a.out-kludge header) with nasm into OUT_DIR and generates tables of the images.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("src/roms");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("test-roms/src/roms")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".asm"))
        .map(|n| n.trim_end_matches(".asm").to_string())
        .collect();
    names.sort();
    let mut table = String::from("/// Every ROM: (name, image).\npub static ROMS: &[(&str, &[u8])] = &[\n");
    let mut broken = String::from(
        "/// ROMs nasm could not assemble: (name, message). A test asserts this is empty.\npub static BROKEN: &[(&str, &str)] = &[\n",
    );
    for n in &names {
        let src = dir.join(format!("{n}.asm"));
        println!("cargo:rerun-if-changed={}", src.display());
        let bin = out.join(format!("{n}.bin"));
        let result = Command::new("nasm")
            .arg("-f")
            .arg("bin")
            .arg("-I")
            .arg(format!("{}/", dir.display()))
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output();
        match result {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                // Keep building the other ROMs; the failure is reported by a test, not hidden.
                let msg = String::from_utf8_lossy(&o.stderr).into_owned();
                println!("cargo:warning=nasm failed on {n}.asm: {}", msg.lines().next().unwrap_or(""));
                broken.push_str(&format!("    ({n:?}, {msg:?}),\n"));
                continue;
            }
            Err(e) => panic!("cannot run nasm ({e}): install it with `apt-get install nasm`"),
        }
        table.push_str(&format!("    ({n:?}, include_bytes!({:?})),\n", bin.display().to_string()));
    }
    table.push_str("];\n");
    broken.push_str("];\n");
    table.push_str(&broken);
    table.push_str(&kernels(&out));
    std::fs::write(out.join("roms.rs"), table).unwrap();
}

/// Assembles `src/kernels/*.asm` into OUT_DIR/kernels and returns the `KERNELS` table (a kernel nasm
/// rejects is left out, which the kernel tests notice).
fn kernels(out: &std::path::Path) -> String {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("src/kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let kout = out.join("kernels");
    std::fs::create_dir_all(&kout).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".asm"))
                .map(|n| n.trim_end_matches(".asm").to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut table = String::from(
        "/// Every multiboot test kernel: (name, image).\npub static KERNELS: &[(&str, &[u8])] = &[\n",
    );
    for n in &names {
        let src = dir.join(format!("{n}.asm"));
        println!("cargo:rerun-if-changed={}", src.display());
        let bin = kout.join(format!("{n}.bin"));
        let ok = Command::new("nasm")
            .arg("-f")
            .arg("bin")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output()
            .map(|o| {
                if !o.status.success() {
                    let msg = String::from_utf8_lossy(&o.stderr).into_owned();
                    println!(
                        "cargo:warning=nasm failed on kernels/{n}.asm: {}",
                        msg.lines().next().unwrap_or("")
                    );
                }
                o.status.success()
            })
            .unwrap_or(false);
        if ok {
            table.push_str(&format!("    ({n:?}, include_bytes!({:?})),\n", bin.display().to_string()));
        }
    }
    table.push_str("];\n");
    table
}
