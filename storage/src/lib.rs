//! Ferrite's storage layer.
#![deny(missing_docs)]

pub mod ahci;
pub mod ata;
pub mod atapi;
pub mod backend;
pub mod config;
pub mod dma;
pub mod ide;
pub mod lock;
pub mod qcow2_guard;

pub use ahci::Ahci;
pub use ata::{Drive, DriveKind, TaskFile};
pub use backend::{BlockBackend, ImageBackend, ImageFormat, ImageOptions, MemBackend, SECTOR};
pub use ide::IdeController;
