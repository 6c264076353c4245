//! Ferrite's self-checking test ROMs, assembled from `src/roms/*.asm` by the build (nasm).
//!
//! Each ROM is a 64 KiB flat image that starts at the reset vector, reports one line per case on the
//! debug console (port 0xE9: `PASS: name` / `FAIL: name ...`) and exits through the isa-debug-exit port
//! 0xF4 with the number of failures (exit status `(n << 1) | 1`, so 1 means every case passed). Every
//! ROM also passes under QEMU TCG; see `tests/` for the harness and each ROM's header for its sources.
//!
//! [`KERNELS`] are multiboot test kernels (`src/kernels/*.asm`, flat images with the a.out-kludge
//! header, loaded at 1 MiB) booted with `--kernel`; they report the same way. [`BOOT_SECTORS`]
//! (`src/boot/*.asm`) are MBR boot sectors for BIOS boots from a disk image. [`OPTION_ROMS`]
//! (`src/optionroms/*.asm`) are BIOS option ROMs the machine hands to SeaBIOS (`linuxboot`: `--kernel`
//! with a BIOS).
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/roms.rs"));

/// The image of multiboot test kernel `name` (from `src/kernels`).
pub fn kernel(name: &str) -> Option<&'static [u8]> {
    KERNELS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The image of boot sector `name` (from `src/boot`).
pub fn boot_sector(name: &str) -> Option<&'static [u8]> {
    BOOT_SECTORS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The image of option ROM `name` (from `src/optionroms`), its checksum bytes not yet set.
pub fn option_rom(name: &str) -> Option<&'static [u8]> {
    OPTION_ROMS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The image of ROM `name`.
pub fn rom(name: &str) -> Option<&'static [u8]> {
    ROMS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
