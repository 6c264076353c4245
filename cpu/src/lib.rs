//! Ferrite's x86-64 CPU: architectural state ([`CpuState`]), the memory path (segmentation, paging,
//! software TLB), exception delivery, and the reference interpreter ([`Interpreter`]) that defines the
//! semantics every other engine must match.
//!
//! The CPU talks to the machine only through [`CpuBus`]; it never sees a device.
#![deny(missing_docs)]

pub mod bus;
pub mod cpuid;
pub mod debug;
pub mod exec;
pub mod fault;
pub mod interp;
pub mod interrupt;
pub mod lazyflags;
pub mod mem;
pub mod model;
pub mod offsets;
pub mod paging;
pub mod regs;
pub mod seg;
pub mod state;
pub mod task;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

pub use bus::CpuBus;
pub use fault::{Fault, Stop};
pub use interp::{BlockBackend, CompiledBlock, Exit, Interpreter};
pub use model::{CpuModel, Vendor};
pub use state::{CpuState, Mode, Quirks, Seg, Segment};
