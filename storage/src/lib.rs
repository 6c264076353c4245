//! Ferrite's storage layer.
#![deny(missing_docs)]

pub mod ata;
pub mod atapi;
pub mod backend;
pub mod lock;

pub use ata::{Drive, DriveKind, TaskFile};
pub use backend::{BlockBackend, ImageBackend, ImageFormat, ImageOptions, MemBackend, SECTOR};
