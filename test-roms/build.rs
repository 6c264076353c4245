//! Assembles every `src/roms/*.asm` (flat 64 KiB ROMs) and every `src/kernels/*.asm` (multiboot kernels:
//! flat images with the a.out-kludge header), `src/boot/*.asm` (boot sectors) and `src/optionroms/*.asm`
//! (BIOS option ROMs) with nasm into OUT_DIR and generates tables of the images.

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
    table.push_str(&flat_images(&out, "kernels", "KERNELS", "Every multiboot test kernel: (name, image)."));
    table.push_str(&flat_images(
        &out,
        "boot",
        "BOOT_SECTORS",
        "Every boot sector (`src/boot`, 512 bytes ending in 55 AA, loaded by a BIOS at 0x7C00): (name, image).",
    ));
    table.push_str(&flat_images(
        &out,
        "optionroms",
        "OPTION_ROMS",
        "Every option ROM (`src/optionroms`, 55 AA header, checksum byte left for the user to set): (name, image).",
    ));
    std::fs::write(out.join("roms.rs"), table).unwrap();
}

/// Assembles `src/<sub>/*.asm` into OUT_DIR/<sub> and returns the table `name` of the images (an image
/// nasm rejects is left out, which the tests of that kind notice).
fn flat_images(out: &std::path::Path, sub: &str, name: &str, doc: &str) -> String {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("src").join(sub);
    println!("cargo:rerun-if-changed={}", dir.display());
    let kout = out.join(sub);
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
    let mut table = format!("/// {doc}\npub static {name}: &[(&str, &[u8])] = &[\n");
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
                        "cargo:warning=nasm failed on {sub}/{n}.asm: {}",
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
