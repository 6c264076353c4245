//! Optional devices and how they are described to [`crate::MachineBuilder`].
//!
//! A device the user can name (`ferrite run --device NAME`) is one line of [`DEVICES`]: its name, a
//! line of help and the function that registers it on the board. Adding a device is therefore one new
//! file (the device, in `chipset`) plus one line here; for a PCI function the line is
//! `|b| b.add_pci_device(DEVFN, Box::new(MyFunction::new()))`, and the board then routes its BARs,
//! ORs its INTx# onto the PIRQ lines, runs its bus-master transfers over guest memory (reporting the
//! pages written), delivers its MSIs and advances it at its deadlines.
//!
//! Programs (tests, embedders) can also hand the builder devices the CLI cannot name:
//! [`DeviceSpec::Pci`] for a PCI function and [`DeviceSpec::Isa`] for a port/MMIO device.

use crate::board::Board;
use crate::{EDU_DEVFN, MachineError};
use chipset::pci::PciFunction;
use vmcore::Device;

/// A device that can be named on the command line.
pub struct DeviceKind {
    /// The name `--device` takes.
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Registers the device on the board.
    pub add: fn(&mut Board) -> Result<(), MachineError>,
}

impl std::fmt::Debug for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The devices `--device` can add, in the order the board registers them.
pub const DEVICES: &[DeviceKind] = &[
    DeviceKind {
        name: "testdev",
        help: "QEMU's pc-testdev: scratch port 0xE0, page-flush port 0xE4, IRQ lines at 0x2000+n, 64 KiB of scratch memory at 0xFF000000",
        add: crate::boot::add_testdev,
    },
    DeviceKind {
        name: "vga",
        help: "the standard VGA with Bochs VBE (1234:1111, QEMU's -vga std) at 00:03.0: ports 0x3B0-0x3DF and 0x1CE-0x1D0, memory 0xA0000-0xBFFFF, 16 MiB linear framebuffer (BAR0); added by default with a BIOS",
        add: add_vga,
    },
    DeviceKind {
        name: "edu",
        help: "QEMU's educational PCI device (1234:11e8) at 00:02.0: BAR0 1 MiB MMIO, factorial, interrupt raise/acknowledge, DMA with a 4 KiB buffer, INTA# or MSI",
        add: |b| {
            b.add_pci_device(EDU_DEVFN, Box::new(chipset::Edu::new()));
            Ok(())
        },
    },
];

/// Where the standard VGA goes: 00:03.0 (QEMU puts it at 00:02.0, which `--device edu` takes here).
pub const VGA_DEVFN: u8 = 3 << 3;

/// An fw_cfg file SeaBIOS loads the VGA's option ROM from (`pci<vendor>,<device>.rom`; it reads a
/// file of that name before it looks at the function's ROM BAR). The CLI puts the VGA BIOS behind the
/// VGA's ROM BAR instead ([`DeviceSpec::OptionRom`]), as QEMU does; this name still works for
/// programs that hand the BIOS its files.
pub const VGA_ROM_FILE: &str = "pci1234,1111.rom";

/// Registers the standard VGA ([`chipset::vga::Vga`]) at [`VGA_DEVFN`] and maps its fixed windows.
fn add_vga(b: &mut Board) -> Result<(), MachineError> {
    if b.pci.function(VGA_DEVFN).is_some() {
        return Err(MachineError::Device("PCI 00:03.0, where the VGA goes, is taken".into()));
    }
    b.add_pci_device(VGA_DEVFN, Box::new(chipset::vga::Vga::new()));
    for (window, start, len, memory) in chipset::vga::LEGACY_WINDOWS {
        let id = b.register(crate::board::Slot::PciWindow { devfn: VGA_DEVFN, window });
        if memory {
            b.map_mmio(id, start, len)
                .map_err(|e| MachineError::Device(format!("vga: legacy memory window: {e}")))?;
        } else {
            b.map_ports(id, start as u16, len as u16, 0);
        }
    }
    Ok(())
}

/// A port window of a [`DeviceSpec::Isa`] device: ports `start..start+len`, seen by the device as
/// offsets from `offset_base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortWindow {
    /// First port.
    pub start: u16,
    /// Number of ports.
    pub len: u16,
    /// Offset the device sees for `start`.
    pub offset_base: u16,
}

/// One device for the builder.
pub enum DeviceSpec {
    /// A device from [`DEVICES`].
    Named(&'static DeviceKind),
    /// A PCI function serving its own BARs, at `devfn` on bus 0 (see [`Board::add_pci_device`]).
    Pci {
        /// Device << 3 | function.
        devfn: u8,
        /// The function.
        function: Box<dyn PciFunction>,
    },
    /// An expansion ROM for the PCI function at `devfn`, added earlier in the list or one of the
    /// board's own (QEMU's `romfile=`): the function's ROM BAR then decodes `image`, which a BIOS finds
    /// by scanning PCI ([`Board::set_pci_rom`]). An empty `image` takes the function's ROM away.
    OptionRom {
        /// Device << 3 | function.
        devfn: u8,
        /// The ROM's contents.
        image: Vec<u8>,
    },
    /// A port and/or MMIO device.
    Isa {
        /// The device.
        device: Box<dyn Device>,
        /// Its port windows.
        ports: Vec<PortWindow>,
        /// Its MMIO windows (start, size).
        mmio: Vec<(u64, u64)>,
    },
}

impl std::fmt::Debug for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Named(k) => write!(f, "Named({})", k.name),
            DeviceSpec::Pci { devfn, function } => write!(f, "Pci({devfn:#x}, {})", function.name()),
            DeviceSpec::OptionRom { devfn, image } => {
                write!(f, "OptionRom({devfn:#x}, {} bytes)", image.len())
            }
            DeviceSpec::Isa { device, .. } => write!(f, "Isa({})", device.name()),
        }
    }
}

impl DeviceSpec {
    /// The device called `name` in [`DEVICES`], or an error listing the known names.
    pub fn named(name: &str) -> Result<DeviceSpec, String> {
        DEVICES.iter().find(|k| k.name == name).map(DeviceSpec::Named).ok_or_else(|| {
            let known: Vec<&str> = DEVICES.iter().map(|k| k.name).collect();
            format!("unknown device '{name}' (known: {})", known.join(", "))
        })
    }

    /// Registers the device on `board`.
    pub(crate) fn add_to(self, board: &mut Board) -> Result<(), MachineError> {
        match self {
            DeviceSpec::Named(k) => (k.add)(board),
            DeviceSpec::Pci { devfn, function } => {
                if board.pci.function(devfn).is_some() {
                    return Err(MachineError::Device(format!(
                        "PCI {:02x}.{} is taken (by {})",
                        devfn >> 3,
                        devfn & 7,
                        board.pci.function(devfn).map_or("?", |f| f.name())
                    )));
                }
                board.add_pci_device(devfn, function);
                Ok(())
            }
            DeviceSpec::OptionRom { devfn, image } => {
                board.set_pci_rom(devfn, image).map_err(MachineError::Device)
            }
            DeviceSpec::Isa { device, ports, mmio } => {
                let name = device.name().to_string();
                let id = board.add_device(device);
                for w in ports {
                    board.map_ports(id, w.start, w.len, w.offset_base);
                }
                for (start, size) in mmio {
                    board
                        .map_mmio(id, start, size)
                        .map_err(|e| MachineError::Device(format!("{name}: MMIO at {start:#x}: {e}")))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_and_unknown_names_list_the_known_ones() {
        assert!(matches!(DeviceSpec::named("edu"), Ok(DeviceSpec::Named(k)) if k.name == "edu"));
        assert!(matches!(DeviceSpec::named("testdev"), Ok(DeviceSpec::Named(k)) if k.name == "testdev"));
        let e = DeviceSpec::named("floppy").unwrap_err();
        assert!(e.contains("floppy") && e.contains("testdev, vga, edu"), "{e}");
        let mut names: Vec<&str> = DEVICES.iter().map(|k| k.name).collect();
        names.dedup();
        assert_eq!(names.len(), DEVICES.len(), "names are unique");
    }
}
