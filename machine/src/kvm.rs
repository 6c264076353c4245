//! The KVM engine: runs the CPU with hardware virtualization through /dev/kvm, with the same guest RAM
//! mapping and the same userspace devices (port and MMIO exits go to the [`Board`]).

use crate::board::Board;
use cpu::{CpuState, Exit};

/// A KVM virtual machine with one vCPU.
pub struct KvmEngine {
    _private: (),
}

impl KvmEngine {
    /// Opens /dev/kvm and creates the VM for `board`'s memory map.
    pub fn new(board: &Board) -> Result<KvmEngine, String> {
        let _ = board;
        Err("the KVM engine is not implemented yet".into())
    }

    /// Runs the vCPU until `cpu.icount` would pass `until` (KVM has no instruction counter: the
    /// machine's clock is host time under KVM) or an exit needs the machine.
    pub fn run(&mut self, cpu: &mut CpuState, board: &mut Board, until: u64) -> Exit {
        let _ = (cpu, board, until);
        Exit::Stopped(cpu::Stop::Shutdown("KVM engine not implemented".into()))
    }
}
