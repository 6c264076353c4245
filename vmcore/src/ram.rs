//! Guest RAM: one anonymous memmap2 mapping, shared by every engine (the interpreter's TLB keeps host
//! pointers into it, KVM maps it with KVM_SET_USER_MEMORY_REGION, the JIT probes it inline).

use memmap2::MmapMut;

/// Guest RAM, addressed by RAM offset (not by guest physical address: the [`crate::AddressMap`]
/// translates physical addresses to RAM offsets around the PC's holes).
pub struct GuestRam {
    map: MmapMut,
}

impl std::fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestRam({} bytes)", self.map.len())
    }
}

impl GuestRam {
    /// Allocates `size` bytes of zeroed guest RAM.
    pub fn new(size: u64) -> std::io::Result<GuestRam> {
        let len = usize::try_from(size)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "memory size too large"))?;
        if len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "memory size is zero"));
        }
        let map = MmapMut::map_anon(len)?;
        Ok(GuestRam { map })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Always false: RAM has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Host pointer to the first byte. Valid for `len()` bytes for the life of this `GuestRam`; the
    /// mapping never moves.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }

    /// The whole of RAM.
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }

    /// The whole of RAM, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Copies `data.len()` bytes out of RAM from `offset`. Returns false (and fills `data` with 0xff)
    /// when the range is not wholly inside RAM.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> bool {
        match self.range(offset, data.len()) {
            Some(r) => {
                data.copy_from_slice(&self.map[r]);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Copies `data` into RAM at `offset`. Returns false (writing nothing) when the range is not wholly
    /// inside RAM.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        match self.range(offset, data.len()) {
            Some(r) => {
                self.map[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn range(&self, offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.map.len()).then_some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_and_bounds() {
        let mut ram = GuestRam::new(8192).unwrap();
        assert!(ram.write(4094, &[1, 2, 3, 4]));
        let mut b = [0u8; 4];
        assert!(ram.read(4094, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(!ram.read(8190, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!ram.write(u64::MAX, &[1]));
        assert!(GuestRam::new(0).is_err());
    }
}
