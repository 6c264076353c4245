//! Ferrite's storage layer.
#![deny(missing_docs)]

pub mod backend;
pub mod lock;

pub use backend::{BlockBackend, ImageBackend, ImageFormat, ImageOptions, MemBackend, SECTOR};
