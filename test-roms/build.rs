//! Assembles every `src/roms/*.asm` with nasm into OUT_DIR and generates a table of the images.

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
    std::fs::write(out.join("roms.rs"), table).unwrap();
}
