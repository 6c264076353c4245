//! Scatter/gather transfers shared by the IDE bus master (PRD tables) and AHCI (PRDTs).
//!
//! A controller first turns its guest-written descriptor table into a bounded list of [`Region`]s,
//! then moves data between the regions and the drive in region-sized pieces, so nothing a guest
//! writes can make the host allocate more than one region (64 KiB for IDE, 4 MiB for AHCI).

pub use chipset::DmaMemory;

/// One piece of guest memory of a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Why a transfer stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// A region is not guest RAM (or a descriptor table could not be read).
    Memory,
    /// The regions hold fewer bytes than the command moves.
    Short,
    /// The drive failed: the ATA error register value.
    Device(u8),
}

/// Copies `len` bytes produced by `fill` (called with consecutive pieces) into the regions. Returns
/// the bytes moved.
pub fn to_memory(
    mem: &mut dyn DmaMemory,
    regions: &[Region],
    len: u64,
    mut fill: impl FnMut(&mut [u8]) -> Result<(), u8>,
) -> Result<u64, DmaError> {
    let mut done = 0u64;
    let mut buf = Vec::new();
    for r in regions {
        if done == len {
            break;
        }
        let n = u64::from(r.len).min(len - done) as usize;
        buf.resize(n, 0);
        fill(&mut buf).map_err(DmaError::Device)?;
        if !mem.write(r.addr, &buf) {
            return Err(DmaError::Memory);
        }
        done += n as u64;
    }
    if done < len { Err(DmaError::Short) } else { Ok(done) }
}

/// Gathers `len` bytes from the regions and hands them to `drain` in consecutive pieces. Returns the
/// bytes moved.
pub fn from_memory(
    mem: &mut dyn DmaMemory,
    regions: &[Region],
    len: u64,
    mut drain: impl FnMut(&[u8]) -> Result<(), u8>,
) -> Result<u64, DmaError> {
    let mut done = 0u64;
    let mut buf = Vec::new();
    for r in regions {
        if done == len {
            break;
        }
        let n = u64::from(r.len).min(len - done) as usize;
        buf.resize(n, 0);
        if !mem.read(r.addr, &mut buf) {
            return Err(DmaError::Memory);
        }
        drain(&buf).map_err(DmaError::Device)?;
        done += n as u64;
    }
    if done < len { Err(DmaError::Short) } else { Ok(done) }
}

/// Guest memory for tests: RAM from 0 to `len`, nothing above (accesses there fail, as master aborts).
#[derive(Clone, Debug)]
pub struct TestMemory {
    /// The bytes.
    pub ram: Vec<u8>,
}

impl TestMemory {
    /// `len` bytes of zeroed RAM.
    pub fn new(len: usize) -> Self {
        TestMemory { ram: vec![0; len] }
    }

    fn range(&self, addr: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let end = addr.checked_add(len as u64)?;
        (end <= self.ram.len() as u64).then_some(addr as usize..end as usize)
    }

    /// Writes a little-endian u32 (test set-up).
    pub fn put_u32(&mut self, addr: u64, v: u32) {
        self.write(addr, &v.to_le_bytes());
    }

    /// Reads a little-endian u32.
    pub fn get_u32(&self, addr: u64) -> u32 {
        let a = addr as usize;
        u32::from_le_bytes(self.ram[a..a + 4].try_into().unwrap_or([0xFF; 4]))
    }
}

impl DmaMemory for TestMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        match self.range(addr, buf.len()) {
            Some(r) => {
                buf.copy_from_slice(&self.ram[r]);
                true
            }
            None => false,
        }
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.range(addr, data.len()) {
            Some(r) => {
                self.ram[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_gather_and_errors() {
        let mut m = TestMemory::new(0x10000);
        let regions = [Region { addr: 0x100, len: 6 }, Region { addr: 0x200, len: 10 }];
        let mut next = 0u8;
        let n = to_memory(&mut m, &regions, 12, |b| {
            for x in b {
                *x = next;
                next += 1;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 12);
        assert_eq!(&m.ram[0x100..0x106], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(&m.ram[0x200..0x207], &[6, 7, 8, 9, 10, 11, 0]);
        let mut got = Vec::new();
        from_memory(&mut m, &regions, 8, |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(to_memory(&mut m, &regions, 17, |_| Ok(())), Err(DmaError::Short));
        let far = [Region { addr: 0xFFFF, len: 2 }];
        assert_eq!(to_memory(&mut m, &far, 2, |_| Ok(())), Err(DmaError::Memory));
        assert_eq!(from_memory(&mut m, &far, 2, |_| Ok(())), Err(DmaError::Memory));
        assert_eq!(to_memory(&mut m, &regions, 4, |_| Err(0x40)), Err(DmaError::Device(0x40)));
    }
}
