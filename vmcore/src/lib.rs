//! Ferrite's physical side of the machine: guest RAM (one anonymous mapping), the physical address map
//! (RAM, ROM, MMIO and unassigned ranges), the port I/O space, the `Device` trait every device
//! implements, virtual time and the snapshot byte format.
//!
//! This crate knows nothing about CPUs or execution engines.
#![deny(missing_docs)]

pub mod device;
pub mod layout;
pub mod map;
pub mod ram;
pub mod snapshot;
pub mod time;

pub use device::{Device, DeviceCtx, DeviceId, IrqLevels, MachineRequests};
pub use map::{AddressMap, Region, RegionKind};
pub use ram::GuestRam;
pub use snapshot::{Snapshot, SnapshotError, SnapshotReader, SnapshotWriter};
pub use time::VirtTime;

/// Size of a guest page for the purposes of RAM mapping and code tracking.
pub const PAGE_SIZE: u64 = 4096;
