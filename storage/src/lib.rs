//! Ferrite's storage layer: disk images and the two disk controllers every x86 OS knows.
//!
//! | Module | What |
//! |---|---|
//! | [`backend`] | [`BlockBackend`]; raw and qcow2 images through `imago` (sync), snapshot overlays, a RAM disk |
//! | [`lock`] | image locks compatible with QEMU's |
//! | [`qcow2_guard`] | metadata crash ordering imago 0.2.6 lacks |
//! | [`ata`], [`atapi`] | the ATA and ATAPI command sets, transport-independent |
//! | [`dma`] | scatter/gather over the board's [`dma::DmaMemory`] |
//! | [`ide`] | the PIIX3 IDE controller and bus-master DMA ([`vmcore::Device`]) |
//! | [`ahci`] | the ICH9 AHCI controller ([`chipset::pci::PciFunction`]) |
//! | [`config`] | `--disk` options and building the controllers |
//!
//! Controllers never touch guest memory: they report `dma_pending()` and the board runs `run_dma`
//! over guest RAM. Commands complete at virtual-time deadlines that depend only on the request
//! ([`ata::latency_ns`]); host I/O is synchronous at fixed points, so runs repeat exactly.
#![deny(missing_docs)]

pub mod ahci;
pub mod ata;
pub mod atapi;
pub mod backend;
pub mod config;
pub mod dma;
pub mod ide;
pub mod lock;
pub mod piix3;
pub mod qcow2_guard;

pub use ahci::Ahci;
pub use ata::{Drive, DriveKind, TaskFile};
pub use backend::{BlockBackend, ImageBackend, ImageFormat, ImageOptions, MemBackend, SECTOR};
pub use ide::IdeController;
pub use piix3::Piix3IdeFunction;
