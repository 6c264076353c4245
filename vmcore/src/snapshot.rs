//! A small, versioned byte format for device and CPU snapshots.
//!
//! Every device writes its state with [`SnapshotWriter`] and reads it back with [`SnapshotReader`];
//! values are little-endian, and each device section begins with a tag so that a mismatched restore is
//! reported rather than silently misread.

use std::fmt;

/// Error while restoring a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The data ended before the value being read.
    Truncated,
    /// A section tag did not match what the reader expected.
    BadTag {
        /// The tag the reader expected.
        expected: String,
        /// The tag found in the data.
        found: String,
    },
    /// A value is out of its valid range.
    Invalid(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated => write!(f, "snapshot truncated"),
            SnapshotError::BadTag { expected, found } => {
                write!(f, "snapshot section mismatch: expected {expected:?}, found {found:?}")
            }
            SnapshotError::Invalid(s) => write!(f, "invalid snapshot value: {s}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// State that goes into whole-machine snapshots: every device and PCI function implements it, and
/// the board accepts no device that does not (`Device` and `PciFunction` have it as a supertrait, and
/// it has no default methods), so every piece of guest-visible device state is saved, restored and
/// hashed, and a recording or snapshot can always be replayed.
pub trait Snapshot {
    /// What a successful restore reports besides success: `()` for a device; for a PCI function, the
    /// decode windows that moved (the board remaps them).
    type Restored;

    /// Writes the state, beginning with a tag that names it.
    fn save(&self, w: &mut SnapshotWriter);

    /// Restores state written by [`Snapshot::save`]. A section that does not read back is an error,
    /// never a panic.
    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Self::Restored, SnapshotError>;
}

/// Appends values to a snapshot buffer.
#[derive(Default, Debug)]
pub struct SnapshotWriter {
    buf: Vec<u8>,
    /// Where each tagged section begins, for [`SnapshotWriter::section_at`] (not written).
    sections: Vec<(usize, String)>,
}

impl SnapshotWriter {
    /// A new, empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Begins a tagged section.
    pub fn tag(&mut self, tag: &str) {
        self.sections.push((self.buf.len(), tag.to_string()));
        self.bytes(tag.as_bytes());
    }
    /// The tagged section that holds byte `at` of the buffer, and `at`'s offset in it (for reports
    /// of where two states differ).
    pub fn section_at(&self, at: usize) -> Option<(&str, usize)> {
        let i = self.sections.partition_point(|(start, _)| *start <= at).checked_sub(1)?;
        let (start, name) = &self.sections[i];
        Some((name.as_str(), at - start))
    }
    /// The buffer written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// Writes one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Writes a bool as one byte.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }
    /// Writes a u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
    /// The finished buffer.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values written by [`SnapshotWriter`].
#[derive(Debug)]
pub struct SnapshotReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> SnapshotReader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        SnapshotReader { data, pos: 0 }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).ok_or(SnapshotError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(SnapshotError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    /// Checks a section tag.
    pub fn tag(&mut self, tag: &str) -> Result<(), SnapshotError> {
        let found = self.bytes()?;
        if found != tag.as_bytes() {
            return Err(SnapshotError::BadTag {
                expected: tag.to_string(),
                found: String::from_utf8_lossy(found).into_owned(),
            });
        }
        Ok(())
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    /// Reads a bool.
    pub fn bool(&mut self) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(SnapshotError::Invalid(format!("bool {v}"))),
        }
    }
    /// Reads `N` bools (written one after another with [`SnapshotWriter::bool`]).
    pub fn bools<const N: usize>(&mut self) -> Result<[bool; N], SnapshotError> {
        let mut out = [false; N];
        for b in &mut out {
            *b = self.bool()?;
        }
        Ok(out)
    }
    /// Reads `N` bytes written one after another with [`SnapshotWriter::u8`].
    pub fn u8s<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8()?;
        }
        Ok(out)
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// Reads a length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| SnapshotError::Truncated)?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = SnapshotWriter::new();
        w.tag("dev");
        w.u8(1);
        w.u16(0x1234);
        w.u32(0xdead_beef);
        w.u64(u64::MAX);
        w.bool(true);
        w.bytes(b"abc");
        let buf = w.finish();
        let mut r = SnapshotReader::new(&buf);
        r.tag("dev").unwrap();
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert!(r.bool().unwrap());
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.u8(), Err(SnapshotError::Truncated));
        let mut w = SnapshotWriter::new();
        for v in [true, false, true] {
            w.bool(v);
        }
        w.u8(7);
        w.u8(9);
        let buf = w.finish();
        let mut r = SnapshotReader::new(&buf);
        assert_eq!(r.bools::<3>().unwrap(), [true, false, true]);
        assert_eq!(r.u8s::<2>().unwrap(), [7, 9]);
        assert_eq!(r.bools::<1>(), Err(SnapshotError::Truncated));
    }

    #[test]
    fn wrong_tag_and_huge_length_are_errors() {
        let mut w = SnapshotWriter::new();
        w.tag("pic");
        let buf = w.finish();
        assert!(matches!(SnapshotReader::new(&buf).tag("pit"), Err(SnapshotError::BadTag { .. })));
        let huge = u64::MAX.to_le_bytes();
        assert_eq!(SnapshotReader::new(&huge).bytes(), Err(SnapshotError::Truncated));
    }
}
