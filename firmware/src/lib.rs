//! Firmware images: loading a flat ROM file (QEMU `-bios` style) and the built-in demo ROM that
//! `ferrite run` boots when no firmware is given, and the ACPI and MP tables the machine writes for
//! guests booted without a BIOS ([`acpi`], [`mptable`], [`smbios`]).
#![deny(missing_docs)]

pub mod acpi;
pub mod linux;
pub mod linuxboot;
pub mod mptable;
pub mod multiboot;
pub mod optionrom;
pub mod smbios;
pub mod table_loader;

use std::path::Path;

/// The built-in demo ROM: from reset through protected mode into long mode, printing each step on
/// COM1 and the debug console, then exiting through port 0xF4.
pub fn demo_rom() -> &'static [u8] {
    test_roms::rom("demo").expect("the demo ROM is assembled by the test-roms build")
}

/// Reads a firmware image from `path`, checking what the machine will accept.
pub fn load_rom(path: &Path) -> Result<Vec<u8>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read ROM {}: {e}", path.display()))?;
    if data.is_empty() {
        return Err(format!("ROM {} is empty", path.display()));
    }
    if !data.len().is_multiple_of(4096) {
        return Err(format!(
            "ROM {} is {} bytes; a flat ROM image must be a multiple of 4 KiB",
            path.display(),
            data.len()
        ));
    }
    if data.len() > 16 << 20 {
        return Err(format!("ROM {} is larger than 16 MiB", path.display()));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_rom_has_a_reset_vector() {
        let r = demo_rom();
        assert_eq!(r.len() % 4096, 0);
        // Far jump (EA) at the reset vector, 16 bytes from the end.
        assert_eq!(r[r.len() - 16], 0xea);
    }

    #[test]
    fn bad_roms_are_rejected() {
        let dir = std::env::temp_dir().join(format!("ferrite-fw-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("odd.bin");
        std::fs::write(&p, [0u8; 100]).unwrap();
        assert!(load_rom(&p).unwrap_err().contains("multiple of 4 KiB"));
        assert!(load_rom(&dir.join("missing.bin")).unwrap_err().contains("cannot read ROM"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
