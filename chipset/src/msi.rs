//! Message Signalled Interrupts: the PCI MSI capability (PCI Local Bus 3.0, 6.8.1) a function adds to
//! its configuration space, and the x86 meaning of a message (Intel SDM vol. 3A, 11.11 "Message
//! Signalled Interrupts").
//!
//! # The capability
//!
//! [`MsiCapability::add`] lays the structure out as PCI 3.0 6.8.1 gives it (offsets from the capability):
//!
//! | Offset | 32-bit address | 64-bit address |
//! |---|---|---|
//! | 0x00 | ID 0x05, next pointer | same |
//! | 0x02 | message control | same |
//! | 0x04 | message address (bits 31:2; 1:0 read zero) | message address |
//! | 0x08 | message data (16 bits) | message upper address |
//! | 0x0C | mask bits (if per-vector masking) | message data (16 bits) |
//! | 0x10 | pending bits (read-only) | mask bits (if per-vector masking) |
//! | 0x14 | - | pending bits (read-only) |
//!
//! Message control: bit 0 MSI enable (read/write), 3:1 multiple message capable (read-only: log2 of the
//! vectors the function requests), 6:4 multiple message enable (read/write: log2 of the vectors software
//! allocated), bit 7 64-bit address capable (read-only), bit 8 per-vector masking capable (read-only).
//! Software must not allocate more vectors than requested (6.8.1.3); a larger multiple-message-enable
//! value, or a reserved one (6, 7), is read back as written but counts as the requested number. Mask and
//! pending bits exist for the requested vectors only; the others are reserved and read zero.
//!
//! # Signalling
//!
//! A function raises interrupt `k` with [`MsiCapability::signal`], which gives a [`Signal`]: with MSI
//! enabled and bus mastering on, the message to send ([`MsiMessage`]: the data register with its low
//! `MME` bits replaced by `k`, PCI 3.0 6.8.1.6 — so with fewer vectors allocated than requested, vectors
//! alias modulo the allocation); with the vector masked, the pending bit is set instead and the message
//! goes out when software unmasks it ([`MsiCapability::unmasked_pending`]); with MSI disabled, the
//! function must use INTx ([`intx_output`] applies the command register's interrupt-disable bit and keeps
//! the status register's interrupt-status bit). A function with MSI enabled never drives INTx (6.8.1).
//! Without bus mastering a function cannot write memory, so a message is lost (kept pending when the
//! function has per-vector masking).
//!
//! # x86 messages
//!
//! [`MsiMessage::x86`] decodes a message addressed to the local APIC range 0xFEE0_0000-0xFEEF_FFFF
//! (address bits 63:32 zero): destination ID in address bits 19:12, redirection hint bit 3, destination
//! mode bit 2 (1 = logical); vector in data bits 7:0, delivery mode 10:8, level bit 14, trigger mode
//! bit 15 (1 = level). Anything else is an ordinary memory write.

use crate::pci::{CMD_INTX_DISABLE, CMD_MASTER, ConfigSpace, reg};

/// Capability ID of MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// First byte of the x86 interrupt-message window (the local APIC's default base).
pub const MSI_WINDOW_BASE: u64 = 0xFEE0_0000;
/// Size of the x86 interrupt-message window.
pub const MSI_WINDOW_SIZE: u64 = 0x10_0000;
/// Status register: interrupt status (INTx condition of the function, PCI 3.0 6.2.3).
pub const STATUS_INTERRUPT: u16 = 1 << 3;

/// Message control: MSI enable.
pub const CTL_ENABLE: u16 = 1 << 0;
/// Message control: 64-bit address capable.
pub const CTL_64BIT: u16 = 1 << 7;
/// Message control: per-vector masking capable.
pub const CTL_MASKING: u16 = 1 << 8;

/// One message: a dword memory write of `data` at `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    /// Bus address.
    pub address: u64,
    /// The dword written (PCI MSI data is 16 bits, zero-extended).
    pub data: u32,
}

/// Delivery modes of an x86 interrupt message (data bits 10:8).
pub mod delivery {
    /// Fixed.
    pub const FIXED: u8 = 0;
    /// Lowest priority.
    pub const LOWEST_PRIORITY: u8 = 1;
    /// SMI.
    pub const SMI: u8 = 2;
    /// NMI.
    pub const NMI: u8 = 4;
    /// INIT.
    pub const INIT: u8 = 5;
    /// ExtINT.
    pub const EXTINT: u8 = 7;
}

/// An interrupt message decoded by the x86 format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X86Interrupt {
    /// Vector (data bits 7:0).
    pub vector: u8,
    /// Delivery mode (data bits 10:8), see [`delivery`].
    pub delivery_mode: u8,
    /// Level: assert (data bit 14; only meaningful for level-triggered messages).
    pub level_assert: bool,
    /// Trigger mode: level (data bit 15).
    pub trigger_level: bool,
    /// Destination ID (address bits 19:12).
    pub dest: u8,
    /// Destination mode: logical (address bit 2).
    pub dest_logical: bool,
    /// Redirection hint (address bit 3): deliver to the lowest-priority processor of the destination set.
    pub redirection_hint: bool,
}

impl MsiMessage {
    /// Whether the message is addressed to the x86 interrupt window (and not to memory).
    pub fn is_interrupt(&self) -> bool {
        (MSI_WINDOW_BASE..MSI_WINDOW_BASE + MSI_WINDOW_SIZE).contains(&self.address)
    }

    /// The interrupt the message requests, if it is addressed to the interrupt window.
    pub fn x86(&self) -> Option<X86Interrupt> {
        if !self.is_interrupt() {
            return None;
        }
        let (a, d) = (self.address, self.data);
        Some(X86Interrupt {
            vector: d as u8,
            delivery_mode: ((d >> 8) & 7) as u8,
            level_assert: d & (1 << 14) != 0,
            trigger_level: d & (1 << 15) != 0,
            dest: (a >> 12) as u8,
            dest_logical: a & (1 << 2) != 0,
            redirection_hint: a & (1 << 3) != 0,
        })
    }
}

/// What a function does to raise one of its interrupts (see [`MsiCapability::signal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Send this message (a memory write by the function).
    Msi(MsiMessage),
    /// MSI is enabled but the vector is masked or bus mastering is off: nothing goes out now (with
    /// per-vector masking the pending bit is set).
    Held,
    /// MSI is disabled: assert INTx (subject to [`intx_output`]).
    Intx,
}

/// The MSI capability of one function: where it is and what it supports. The registers live in the
/// function's [`ConfigSpace`], which every call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiCapability {
    /// Offset of the capability in configuration space.
    pub offset: usize,
    /// 64-bit message address.
    pub is64: bool,
    /// Per-vector masking.
    pub masking: bool,
    /// log2 of the vectors requested (multiple message capable, 0-5).
    pub log2_requested: u8,
}

impl MsiCapability {
    /// Adds an MSI capability requesting `2^log2_vectors` vectors (clamped to 0-5), with a 64-bit address
    /// if `is64` and per-vector mask and pending bits if `masking`. None if configuration space is full.
    pub fn add(cfg: &mut ConfigSpace, log2_vectors: u8, is64: bool, masking: bool) -> Option<MsiCapability> {
        let log2 = log2_vectors.min(5);
        let ctl =
            (u16::from(log2) << 1) | if is64 { CTL_64BIT } else { 0 } | if masking { CTL_MASKING } else { 0 };
        // Body = everything after the ID and next pointer; `mask` its writable bits.
        let mut body = ctl.to_le_bytes().to_vec();
        let mut mask = vec![0x71u8, 0x00]; // enable, multiple message enable
        body.extend([0; 4]);
        mask.extend([0xFC, 0xFF, 0xFF, 0xFF]); // address bits 31:2
        if is64 {
            body.extend([0; 4]);
            mask.extend([0xFF; 4]);
        }
        body.extend([0; 2]);
        mask.extend([0xFF; 2]); // data
        if masking {
            body.extend([0; 2]); // reserved half of the data dword
            mask.extend([0; 2]);
            let bits = Self::vector_bits(log2);
            body.extend([0; 8]);
            mask.extend(bits.to_le_bytes());
            mask.extend([0; 4]); // pending bits are read-only
        }
        let offset = cfg.add_capability(CAP_ID_MSI, &body, &mask)?;
        Some(MsiCapability { offset, is64, masking, log2_requested: log2 })
    }

    fn vector_bits(log2: u8) -> u32 {
        if log2 >= 5 { u32::MAX } else { (1u32 << (1u32 << log2)) - 1 }
    }

    fn control(&self, cfg: &ConfigSpace) -> u16 {
        cfg.u16(self.offset + 2)
    }

    fn data_offset(&self) -> usize {
        self.offset + if self.is64 { 12 } else { 8 }
    }

    fn mask_offset(&self) -> usize {
        self.offset + if self.is64 { 0x10 } else { 0x0C }
    }

    /// Whether the guest enabled MSI.
    pub fn enabled(&self, cfg: &ConfigSpace) -> bool {
        self.control(cfg) & CTL_ENABLE != 0
    }

    /// log2 of the vectors allocated: multiple message enable, at most what was requested.
    pub fn log2_allocated(&self, cfg: &ConfigSpace) -> u8 {
        (((self.control(cfg) >> 4) & 7) as u8).min(self.log2_requested)
    }

    /// The programmed address (the upper half only for a 64-bit capability).
    pub fn address(&self, cfg: &ConfigSpace) -> u64 {
        let lo = u64::from(cfg.u32(self.offset + 4) & !3);
        if self.is64 { lo | (u64::from(cfg.u32(self.offset + 8)) << 32) } else { lo }
    }

    /// The message vector `k` would send with MSI enabled: the data register's low bits, as many as
    /// allocated, replaced by `k` (which thus aliases modulo the allocation). None if MSI is disabled.
    pub fn message(&self, cfg: &ConfigSpace, k: u32) -> Option<MsiMessage> {
        if !self.enabled(cfg) {
            return None;
        }
        let low = (1u32 << self.log2_allocated(cfg)) - 1;
        let data = u32::from(cfg.u16(self.data_offset()));
        Some(MsiMessage { address: self.address(cfg), data: (data & !low) | (k & low) })
    }

    /// Whether vector `k` (after aliasing) is masked. Always false without per-vector masking.
    pub fn masked(&self, cfg: &ConfigSpace, k: u32) -> bool {
        self.masking && cfg.u32(self.mask_offset()) & (1 << self.slot(cfg, k)) != 0
    }

    /// The pending bits (zero without per-vector masking).
    pub fn pending(&self, cfg: &ConfigSpace) -> u32 {
        if self.masking { cfg.u32(self.mask_offset() + 4) } else { 0 }
    }

    fn slot(&self, cfg: &ConfigSpace, k: u32) -> u32 {
        k & ((1u32 << self.log2_allocated(cfg)) - 1)
    }

    fn set_pending(&self, cfg: &mut ConfigSpace, bits: u32) {
        if self.masking {
            cfg.update_u32(self.mask_offset() + 4, bits);
        }
    }

    /// The function raises interrupt `k`: what it must do (see [`Signal`]). Sets the pending bit of a
    /// held vector when the function has per-vector masking.
    pub fn signal(&self, cfg: &mut ConfigSpace, k: u32) -> Signal {
        let Some(msg) = self.message(cfg, k) else { return Signal::Intx };
        let master = cfg.u16(reg::COMMAND) & CMD_MASTER != 0;
        if self.masked(cfg, k) || !master {
            let p = self.pending(cfg) | (1 << self.slot(cfg, k));
            self.set_pending(cfg, p);
            return Signal::Held;
        }
        Signal::Msi(msg)
    }

    /// After a configuration write: the messages of pending vectors that may go out now (MSI enabled,
    /// bus mastering on, vector unmasked); their pending bits are cleared. Disabling MSI drops what was
    /// pending.
    pub fn unmasked_pending(&self, cfg: &mut ConfigSpace) -> Vec<MsiMessage> {
        let pending = self.pending(cfg);
        if pending == 0 {
            return Vec::new();
        }
        if !self.enabled(cfg) {
            self.set_pending(cfg, 0);
            return Vec::new();
        }
        if cfg.u16(reg::COMMAND) & CMD_MASTER == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut left = pending;
        for k in 0..32u32 {
            if pending & (1 << k) != 0 && !self.masked(cfg, k) {
                left &= !(1 << k);
                out.extend(self.message(cfg, k));
            }
        }
        self.set_pending(cfg, left);
        out
    }
}

/// The level a function drives on its INTx# pin, given whether its interrupt condition holds: asserted
/// only with MSI off (`msi_enabled` false) and the command register's interrupt-disable bit clear. Keeps
/// the status register's interrupt-status bit, which shows the condition whatever the disable bit says
/// (PCI 3.0 6.2.2, 6.2.3).
pub fn intx_output(cfg: &mut ConfigSpace, condition: bool, msi_enabled: bool) -> bool {
    let pending = condition && !msi_enabled;
    let st = cfg.u16(reg::STATUS);
    let new = if pending { st | STATUS_INTERRUPT } else { st & !STATUS_INTERRUPT };
    if new != st {
        cfg.update_u16(reg::STATUS, new);
    }
    pending && cfg.u16(reg::COMMAND) & CMD_INTX_DISABLE == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::CMD_MEM;

    fn wr(cfg: &mut ConfigSpace, off: usize, v: &[u8]) {
        let _ = cfg.write(off, v);
    }

    #[test]
    fn layout_and_read_only_bits_32_bit_with_masking() {
        let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
        let m = MsiCapability::add(&mut cfg, 1, false, true).unwrap();
        assert_eq!(cfg.find_capability(CAP_ID_MSI), Some(m.offset));
        let o = m.offset;
        assert_eq!(cfg.u16(o + 2), 0x0102, "masking capable, 2 vectors requested, 32-bit");
        wr(&mut cfg, o + 2, &0xFFFFu16.to_le_bytes());
        assert_eq!(cfg.u16(o + 2), 0x0173, "only enable and MME are writable");
        wr(&mut cfg, o + 4, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(cfg.u32(o + 4), 0xFFFF_FFFC, "address is dword aligned");
        wr(&mut cfg, o + 8, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(cfg.u32(o + 8), 0x0000_FFFF, "16-bit data, reserved upper half");
        wr(&mut cfg, o + 0x0C, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(cfg.u32(o + 0x0C), 0b11, "mask bits for the two requested vectors");
        wr(&mut cfg, o + 0x10, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(cfg.u32(o + 0x10), 0, "pending bits are read-only");
    }

    #[test]
    fn layout_64_bit_without_masking() {
        let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
        let m = MsiCapability::add(&mut cfg, 0, true, false).unwrap();
        let o = m.offset;
        assert_eq!(cfg.u32(o) & 0xFFFF_00FF, 0x0080_0005);
        wr(&mut cfg, o + 8, &0x1234_5678u32.to_le_bytes());
        wr(&mut cfg, o + 4, &0xFEE0_1000u32.to_le_bytes());
        wr(&mut cfg, o + 12, &0xABCDu16.to_le_bytes());
        wr(&mut cfg, o + 2, &[1]);
        assert_eq!(m.message(&cfg, 0), Some(MsiMessage { address: 0x1234_5678_FEE0_1000, data: 0xABCD }));
        assert_eq!(
            m.message(&cfg, 7),
            Some(MsiMessage { address: 0x1234_5678_FEE0_1000, data: 0xABCD }),
            "one vector: no data bits replaced"
        );
        // The next capability byte lies past the 14-byte structure.
        assert_eq!(cfg.add_capability(0x09, &[0], &[0]), Some((o + 14).next_multiple_of(4)));
    }

    #[test]
    fn multiple_message_enable_controls_the_data_bits() {
        let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
        let m = MsiCapability::add(&mut cfg, 3, false, false).unwrap();
        let o = m.offset;
        wr(&mut cfg, o + 4, &0xFEE0_0000u32.to_le_bytes());
        wr(&mut cfg, o + 8, &0x4060u16.to_le_bytes());
        assert_eq!(m.message(&cfg, 0), None, "disabled");
        wr(&mut cfg, o + 2, &[0x01]); // MME 0: one vector
        assert_eq!(m.message(&cfg, 5).unwrap().data, 0x4060);
        wr(&mut cfg, o + 2, &[0x21]); // MME 2: four vectors
        assert_eq!(m.message(&cfg, 1).unwrap().data, 0x4061);
        assert_eq!(m.message(&cfg, 7).unwrap().data, 0x4063, "aliases modulo the allocation");
        wr(&mut cfg, o + 2, &[0x71]); // MME 7 (reserved, above MMC 3)
        assert_eq!(cfg.u16(o + 2) & 0x70, 0x70, "read back as written");
        assert_eq!(m.log2_allocated(&cfg), 3);
        assert_eq!(m.message(&cfg, 13).unwrap().data, 0x4065, "counts as the 8 vectors requested");
    }

    #[test]
    fn signal_masking_bus_master_and_intx() {
        let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
        let m = MsiCapability::add(&mut cfg, 1, true, true).unwrap();
        let o = m.offset;
        assert_eq!(m.signal(&mut cfg, 0), Signal::Intx, "MSI disabled");
        assert!(intx_output(&mut cfg, true, false));
        assert_eq!(cfg.u16(reg::STATUS) & STATUS_INTERRUPT, STATUS_INTERRUPT);
        wr(&mut cfg, reg::COMMAND, &CMD_INTX_DISABLE.to_le_bytes());
        assert!(!intx_output(&mut cfg, true, false), "interrupt disable");
        assert_eq!(cfg.u16(reg::STATUS) & STATUS_INTERRUPT, STATUS_INTERRUPT, "status unaffected by disable");
        assert!(!intx_output(&mut cfg, true, true), "MSI on: no INTx");
        assert_eq!(cfg.u16(reg::STATUS) & STATUS_INTERRUPT, 0);
        wr(&mut cfg, o + 4, &0xFEE0_0000u32.to_le_bytes());
        wr(&mut cfg, o + 12, &0x0050u16.to_le_bytes());
        wr(&mut cfg, o + 2, &[0x11]); // enable, two vectors
        assert_eq!(m.signal(&mut cfg, 1), Signal::Held, "no bus mastering");
        assert_eq!(m.pending(&cfg), 0b10);
        wr(&mut cfg, reg::COMMAND, &(CMD_MASTER | CMD_MEM).to_le_bytes());
        let msgs = m.unmasked_pending(&mut cfg);
        assert_eq!(msgs, vec![MsiMessage { address: 0xFEE0_0000, data: 0x51 }]);
        assert_eq!(m.pending(&cfg), 0);
        wr(&mut cfg, o + 0x10, &1u32.to_le_bytes()); // mask vector 0
        assert_eq!(m.signal(&mut cfg, 0), Signal::Held);
        assert_eq!(m.signal(&mut cfg, 1), Signal::Msi(MsiMessage { address: 0xFEE0_0000, data: 0x51 }));
        assert!(m.unmasked_pending(&mut cfg).is_empty(), "still masked");
        assert_eq!(m.pending(&cfg), 1);
        wr(&mut cfg, o + 0x10, &0u32.to_le_bytes());
        assert_eq!(m.unmasked_pending(&mut cfg), vec![MsiMessage { address: 0xFEE0_0000, data: 0x50 }]);
        // Disabling MSI drops pending vectors.
        wr(&mut cfg, o + 0x10, &1u32.to_le_bytes());
        assert_eq!(m.signal(&mut cfg, 0), Signal::Held);
        wr(&mut cfg, o + 2, &[0x10]);
        assert!(m.unmasked_pending(&mut cfg).is_empty());
        assert_eq!(m.pending(&cfg), 0);
    }

    #[test]
    fn x86_format() {
        let m = MsiMessage { address: 0xFEE0_300C, data: 0xC461 };
        assert_eq!(
            m.x86(),
            Some(X86Interrupt {
                vector: 0x61,
                delivery_mode: delivery::NMI,
                level_assert: true,
                trigger_level: true,
                dest: 3,
                dest_logical: true,
                redirection_hint: true,
            })
        );
        assert_eq!(MsiMessage { address: 0xFEF0_0000, data: 0x61 }.x86(), None);
        assert_eq!(MsiMessage { address: 0x1_FEE0_0000, data: 0x61 }.x86(), None, "above 4 GiB is memory");
        assert_eq!(MsiMessage { address: 0xFEDF_FFFC, data: 0x61 }.x86(), None);
        let e = MsiMessage { address: 0xFEEF_F000, data: 0x30 }.x86().unwrap();
        assert_eq!((e.dest, e.dest_logical, e.delivery_mode, e.trigger_level), (0xFF, false, 0, false));
    }
}
