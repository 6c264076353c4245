//! Crash ordering around imago's qcow2 metadata updates.
//!
//! imago 0.2.6 keeps refcount blocks in a write-back cache but writes an L1 entry to the file at once
//! when it allocates an L2 table (`ensure_l2`), before the refcount of the new L2 cluster leaves the
//! cache. A process killed in between (SIGKILL, a host crash) leaves an L1 entry pointing at a cluster
//! with refcount 0, which `qemu-img check` reports as corruption (measured: the durability test fails
//! that way without this guard). Data-cluster allocations are ordered correctly by imago's cache
//! dependencies (the L2 cache flushes the refcount cache first), so only L2-table allocations, and the
//! refcount-table growth that happens when the file passes a refcount block's coverage, need help.
//!
//! The guard reads the image's L1 table once, knows which L1 slots already have an L2 table that
//! belongs to this image alone (the COPIED flag), and after a guest write that touched another slot,
//! or that grew the file into the coverage of a new refcount block, flushes imago's metadata caches
//! (no fsync). That narrows the window from "until the guest flushes" to the few instructions between
//! imago's L1 write and the flush that follows it in the same call; closing it fully needs the
//! ordering fixed in imago (refcount before L1), which we would report upstream.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Most L1 entries tracked (an L1 of 2^22 entries maps 2 PiB with 64 KiB clusters).
const MAX_L1: u64 = 1 << 22;

/// What the guard knows about one qcow2 image file.
#[derive(Debug)]
pub struct Qcow2Guard {
    file: File,
    /// log2 of the guest bytes one L2 table maps.
    l2_span_bits: u32,
    /// L1 slots with an L2 table owned by this image.
    present: Vec<bool>,
    /// log2 of the host bytes one refcount block covers.
    refblock_span_bits: u32,
    /// File length after the last check.
    len: u64,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

impl Qcow2Guard {
    /// Reads the header and L1 table of `path`.
    pub fn open(path: &Path) -> io::Result<Qcow2Guard> {
        let file = File::open(path)?;
        let mut h = [0u8; 104];
        let n = file.read_at(&mut h, 0)?;
        if n < 72 || &h[..4] != b"QFI\xfb" {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a qcow2 header"));
        }
        let version = be32(&h[4..8]);
        let cluster_bits = be32(&h[20..24]);
        if !(9..=21).contains(&cluster_bits) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad qcow2 cluster size"));
        }
        let l1_size = u64::from(be32(&h[36..40])).min(MAX_L1);
        let l1_offset = be64(&h[40..48]);
        let refcount_order = if version >= 3 && n >= 100 { be32(&h[96..100]).min(6) } else { 4 };
        let mut raw = vec![0u8; (l1_size * 8) as usize];
        file.read_at(&mut raw, l1_offset)?;
        let present = raw
            .chunks_exact(8)
            .map(|e| {
                let v = be64(e);
                v & (1 << 63) != 0 && v & 0x00FF_FFFF_FFFF_FE00 != 0
            })
            .collect();
        let len = file.metadata()?.len();
        Ok(Qcow2Guard {
            file,
            l2_span_bits: 2 * cluster_bits - 3,
            present,
            // A refblock is one cluster of 2^refcount_order-bit entries, one per cluster.
            refblock_span_bits: cluster_bits + cluster_bits + 3 - refcount_order,
            len,
        })
    }

    /// Whether a write of `len` bytes at guest `offset` may allocate an L2 table.
    pub fn touches_new_l2(&self, offset: u64, len: usize) -> bool {
        if len == 0 {
            return false;
        }
        let first = offset >> self.l2_span_bits;
        let last = (offset + len as u64 - 1) >> self.l2_span_bits;
        (first..=last).any(|i| !self.present.get(i as usize).copied().unwrap_or(false))
    }

    /// Records that the slots of a write now have their own L2 tables.
    pub fn mark(&mut self, offset: u64, len: usize) {
        if len == 0 {
            return;
        }
        let first = offset >> self.l2_span_bits;
        let last = (offset + len as u64 - 1) >> self.l2_span_bits;
        for i in first..=last {
            if let Some(p) = self.present.get_mut(i as usize) {
                *p = true;
            }
        }
    }

    /// Whether the file grew into the coverage of another refcount block since the last call.
    pub fn grew_past_refblock(&mut self) -> io::Result<bool> {
        let len = self.file.metadata()?.len();
        let old = self.len;
        self.len = len;
        Ok(len > old
            && (len - 1) >> self.refblock_span_bits != old.saturating_sub(1) >> self.refblock_span_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_slots() {
        let g = Qcow2Guard {
            file: File::open("/dev/null").unwrap(),
            l2_span_bits: 29,
            present: vec![true, false, true],
            refblock_span_bits: 31,
            len: 0,
        };
        assert!(!g.touches_new_l2(0, 4096));
        assert!(g.touches_new_l2((1 << 29) - 512, 1024), "crosses into slot 1");
        assert!(!g.touches_new_l2(2 << 29, 512));
        assert!(g.touches_new_l2(3 << 29, 512), "beyond the L1 table");
        assert!(!g.touches_new_l2(1 << 29, 0));
    }
}
