//! ATAPI packet commands of a CD-ROM drive (SCSI Primary Commands and MMC, the subset hosts use), over
//! an ISO image of 2048-byte blocks.
//!
//! A failing packet leaves sense data (key, ASC, ASCQ) for REQUEST SENSE and reports CHECK CONDITION to
//! the transport, which sets ERR with the sense key in the error register's high nibble. After a disc
//! is inserted or removed the next command (other than INQUIRY, REQUEST SENSE and GET EVENT STATUS
//! NOTIFICATION) fails once with UNIT ATTENTION / 28h "medium may have changed", and GET EVENT STATUS
//! NOTIFICATION reports the media event once.

use crate::ata::{CD_BLOCK, Drive};

/// Sense keys.
pub mod sense {
    /// No sense.
    pub const NO_SENSE: u8 = 0;
    /// Not ready (no disc).
    pub const NOT_READY: u8 = 2;
    /// Medium error.
    pub const MEDIUM_ERROR: u8 = 3;
    /// Illegal request.
    pub const ILLEGAL_REQUEST: u8 = 5;
    /// Unit attention.
    pub const UNIT_ATTENTION: u8 = 6;
}

/// Additional sense codes used here.
pub mod asc {
    /// Unrecovered read error.
    pub const READ_ERROR: u8 = 0x11;
    /// Invalid command operation code.
    pub const INVALID_OPCODE: u8 = 0x20;
    /// Logical block address out of range.
    pub const LBA_OUT_OF_RANGE: u8 = 0x21;
    /// Invalid field in CDB.
    pub const INVALID_FIELD: u8 = 0x24;
    /// Not ready to ready change, medium may have changed.
    pub const MEDIUM_CHANGED: u8 = 0x28;
    /// Medium not present.
    pub const NO_MEDIUM: u8 = 0x3A;
    /// Medium removal prevented (ASCQ 02h).
    pub const REMOVAL_PREVENTED: u8 = 0x53;
}

/// Packet opcodes.
#[allow(missing_docs)]
pub mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const START_STOP_UNIT: u8 = 0x1B;
    pub const PREVENT_ALLOW: u8 = 0x1E;
    pub const READ_CAPACITY: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const READ_TOC: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS: u8 = 0x4A;
    pub const MODE_SENSE_10: u8 = 0x5A;
    pub const READ_12: u8 = 0xA8;
}

/// Media event for GET EVENT STATUS NOTIFICATION.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaEvent {
    /// Nothing happened.
    #[default]
    None,
    /// A disc was inserted.
    NewMedia,
    /// The disc was removed.
    Removal,
}

/// The drive's ATAPI state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AtapiState {
    /// Sense key, ASC, ASCQ of the last failure.
    pub sense: [u8; 3],
    /// A medium change the next command reports as UNIT ATTENTION.
    pub unit_attention: bool,
    /// PREVENT MEDIUM REMOVAL is in force.
    pub locked: bool,
    /// Pending media event.
    pub event: MediaEvent,
}

impl AtapiState {
    /// Records a disc insertion (`inserted`) or removal.
    pub fn media_changed(&mut self, inserted: bool) {
        self.unit_attention = true;
        self.event = if inserted { MediaEvent::NewMedia } else { MediaEvent::Removal };
    }
}

/// What a packet asks the transport to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketResult {
    /// Completed without data.
    Done,
    /// Send these bytes to the host (already cut to the allocation length).
    Data(Vec<u8>),
    /// Send `blocks` 2048-byte blocks from `lba` to the host.
    Read {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// Failed: sense data is set; the error register gets this value (sense key << 4 | ABRT).
    Check(u8),
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// LBA to minutes/seconds/frames (with the 2-second lead-in), as READ TOC's MSF form.
fn msf(lba: u64) -> [u8; 4] {
    let f = lba + 150;
    [0, ((f / 75 / 60) & 0xFF) as u8, (f / 75 % 60) as u8, (f % 75) as u8]
}

fn cut(mut v: Vec<u8>, alloc: usize) -> PacketResult {
    v.truncate(alloc);
    PacketResult::Data(v)
}

impl Drive {
    fn check(&mut self, key: u8, code: u8, qual: u8) -> PacketResult {
        self.atapi.sense = [key, code, qual];
        PacketResult::Check(key << 4 | crate::ata::error::ABRT)
    }

    /// Runs one 12-byte ATAPI packet.
    pub fn packet(&mut self, cdb: &[u8; 12]) -> PacketResult {
        let opcode = cdb[0];
        // Commands that report state rather than touching the medium run even with a unit attention.
        if !matches!(opcode, op::INQUIRY | op::REQUEST_SENSE | op::GET_EVENT_STATUS | op::GET_CONFIGURATION)
            && self.atapi.unit_attention
        {
            self.atapi.unit_attention = false;
            return self.check(sense::UNIT_ATTENTION, asc::MEDIUM_CHANGED, 0);
        }
        let needs_media = matches!(
            opcode,
            op::TEST_UNIT_READY | op::READ_CAPACITY | op::READ_10 | op::READ_12 | op::READ_TOC
        );
        if needs_media && !self.has_media() {
            return self.check(sense::NOT_READY, asc::NO_MEDIUM, 0);
        }
        let result = match opcode {
            op::TEST_UNIT_READY => PacketResult::Done,
            op::REQUEST_SENSE => {
                let mut s = vec![0u8; 18];
                s[0] = 0x70;
                s[2] = self.atapi.sense[0];
                s[7] = 10;
                s[12] = self.atapi.sense[1];
                s[13] = self.atapi.sense[2];
                self.atapi.sense = [0; 3];
                return cut(s, usize::from(cdb[4]));
            }
            op::INQUIRY => {
                if cdb[1] & 1 != 0 {
                    // Vital product data pages: not implemented.
                    return self.check(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD, 0);
                }
                let mut d = vec![0u8; 36];
                d[0] = 0x05; // CD/DVD device
                d[1] = 0x80; // removable
                d[2] = 0x05; // SPC-3
                d[3] = 0x32; // response format 2, ATAPI version 3
                d[4] = 31;
                d[8..16].copy_from_slice(b"FERRITE ");
                d[16..32].copy_from_slice(b"DVD-ROM         ");
                d[32..36].copy_from_slice(b"1.0 ");
                cut(d, usize::from(cdb[4]))
            }
            op::READ_CAPACITY => {
                let last = self.capacity().saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&(CD_BLOCK as u32).to_be_bytes());
                PacketResult::Data(d)
            }
            op::READ_10 | op::READ_12 => {
                let lba = u64::from(be32(&cdb[2..6]));
                let blocks =
                    if opcode == op::READ_10 { u32::from(be16(&cdb[7..9])) } else { be32(&cdb[6..10]) };
                if lba + u64::from(blocks) > self.capacity() {
                    return self.check(sense::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE, 0);
                }
                if blocks == 0 { PacketResult::Done } else { PacketResult::Read { lba, blocks } }
            }
            op::READ_TOC => return self.read_toc(cdb),
            op::MODE_SENSE_10 => return self.mode_sense(cdb),
            op::GET_CONFIGURATION => self.get_configuration(cdb),
            op::GET_EVENT_STATUS => return self.event_status(cdb),
            op::START_STOP_UNIT => {
                let (loej, start) = (cdb[4] & 2 != 0, cdb[4] & 1 != 0);
                if loej && !start {
                    if self.atapi.locked {
                        return self.check(sense::ILLEGAL_REQUEST, asc::REMOVAL_PREVENTED, 2);
                    }
                    if self.has_media() {
                        self.eject();
                        // The guest asked for it: no unit attention for its own eject.
                        self.atapi.unit_attention = false;
                    }
                }
                PacketResult::Done
            }
            op::PREVENT_ALLOW => {
                self.atapi.locked = cdb[4] & 1 != 0;
                PacketResult::Done
            }
            _ => return self.check(sense::ILLEGAL_REQUEST, asc::INVALID_OPCODE, 0),
        };
        self.atapi.sense = [sense::NO_SENSE, 0, 0];
        result
    }

    fn read_toc(&mut self, cdb: &[u8; 12]) -> PacketResult {
        let msf_form = cdb[1] & 2 != 0;
        let alloc = usize::from(be16(&cdb[7..9]));
        let format = match cdb[2] & 0x0F {
            0 if cdb[9] >> 6 != 0 => cdb[9] >> 6, // old ATAPI: format in the control byte
            f => f,
        };
        let addr = |lba: u64| if msf_form { msf(lba) } else { (lba as u32).to_be_bytes() };
        let mut d = vec![0u8, 0, 1, 1];
        match format {
            0 => {
                let start = cdb[6];
                if start > 1 && start != 0xAA {
                    return self.check(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD, 0);
                }
                if start <= 1 {
                    d.extend_from_slice(&[0, 0x14, 1, 0]); // data track 1
                    d.extend_from_slice(&addr(0));
                }
                d.extend_from_slice(&[0, 0x16, 0xAA, 0]); // lead-out
                d.extend_from_slice(&addr(self.capacity()));
            }
            1 => {
                // Session information: first session, track 1 at 0.
                d.extend_from_slice(&[0, 0x14, 1, 0]);
                d.extend_from_slice(&addr(0));
            }
            _ => return self.check(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD, 0),
        }
        let len = (d.len() - 2) as u16;
        d[..2].copy_from_slice(&len.to_be_bytes());
        self.atapi.sense = [0; 3];
        cut(d, alloc)
    }

    fn mode_sense(&mut self, cdb: &[u8; 12]) -> PacketResult {
        let alloc = usize::from(be16(&cdb[7..9]));
        let page = cdb[2] & 0x3F;
        if cdb[2] >> 6 == 3 {
            // Saved values are not supported.
            return self.check(sense::ILLEGAL_REQUEST, 0x39, 0);
        }
        let error_recovery = [0x01u8, 0x06, 0, 5, 0, 0, 0, 0];
        let capabilities =
            [0x2Au8, 0x12, 0x3B, 0, 0x71, 0x60, 0x29, 0, 0x02, 0xC2, 0, 2, 0x02, 0, 0x02, 0xC2, 0, 0, 0, 0];
        let mut d = vec![0u8; 8];
        d[2] = if self.has_media() { 0x01 } else { 0x70 }; // medium type: data CD / no disc
        match page {
            0x01 => d.extend_from_slice(&error_recovery),
            0x2A => d.extend_from_slice(&capabilities),
            0x3F => {
                d.extend_from_slice(&error_recovery);
                d.extend_from_slice(&capabilities);
            }
            _ => return self.check(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD, 0),
        }
        let len = (d.len() - 2) as u16;
        d[..2].copy_from_slice(&len.to_be_bytes());
        self.atapi.sense = [0; 3];
        cut(d, alloc)
    }

    fn get_configuration(&mut self, cdb: &[u8; 12]) -> PacketResult {
        let rt = cdb[1] & 3;
        let start = be16(&cdb[2..4]);
        let alloc = usize::from(be16(&cdb[7..9]));
        let profile: u16 = if self.has_media() { 0x0008 } else { 0 };
        let features: [(u16, Vec<u8>); 3] = [
            // Profile list: CD-ROM, current when a disc is in.
            (0x0000, vec![0x00, 0x08, u8::from(self.has_media()), 0]),
            // Core: ATAPI interface.
            (0x0001, vec![0, 0, 0, 2]),
            // Removable medium: tray, eject, lock.
            (0x0003, vec![0x29 | u8::from(self.atapi.locked) << 2, 0, 0, 0]),
        ];
        let mut d = vec![0u8; 8];
        d[6..8].copy_from_slice(&profile.to_be_bytes());
        for (code, body) in features {
            let take = match rt {
                0 | 1 => code >= start,
                2 => code == start,
                _ => false,
            };
            if take {
                d.extend_from_slice(&code.to_be_bytes());
                let current = code != 0 || self.has_media();
                d.push(0x03 | u8::from(current)); // version 0, persistent, current
                d.push(body.len() as u8);
                d.extend_from_slice(&body);
            }
        }
        let len = (d.len() - 4) as u32;
        d[..4].copy_from_slice(&len.to_be_bytes());
        d.truncate(alloc);
        PacketResult::Data(d)
    }

    fn event_status(&mut self, cdb: &[u8; 12]) -> PacketResult {
        if cdb[1] & 1 == 0 {
            // Only polled operation is supported.
            return self.check(sense::ILLEGAL_REQUEST, asc::INVALID_FIELD, 0);
        }
        let alloc = usize::from(be16(&cdb[7..9]));
        let mut d = vec![0u8, 2, 0x80, 0x10]; // no event available, media class supported
        if cdb[4] & 0x10 != 0 {
            let code = match std::mem::take(&mut self.atapi.event) {
                MediaEvent::None => 0,
                MediaEvent::NewMedia => 2,
                MediaEvent::Removal => 3,
            };
            d = vec![0, 6, 0x04, 0x10, code, u8::from(self.has_media()) << 1, 0, 0];
        }
        self.atapi.sense = [0; 3];
        cut(d, alloc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    fn iso(blocks: usize) -> Box<MemBackend> {
        let mut v = vec![0u8; blocks * 2048];
        for (i, c) in v.chunks_mut(2048).enumerate() {
            c[..4].copy_from_slice(&(i as u32).to_le_bytes());
        }
        Box::new(MemBackend::from_bytes(v, true))
    }

    fn cdb(bytes: &[u8]) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..bytes.len()].copy_from_slice(bytes);
        c
    }

    fn sense_of(d: &mut Drive) -> [u8; 3] {
        let PacketResult::Data(s) = d.packet(&cdb(&[op::REQUEST_SENSE, 0, 0, 0, 18])) else { panic!() };
        [s[2], s[12], s[13]]
    }

    #[test]
    fn inquiry_capacity_and_reads() {
        let mut d = Drive::cdrom(Some(iso(100)), "CD");
        let PacketResult::Data(i) = d.packet(&cdb(&[op::INQUIRY, 0, 0, 0, 96])) else { panic!() };
        assert_eq!((i[0], i[1], i.len()), (5, 0x80, 36));
        assert_eq!(d.packet(&cdb(&[op::INQUIRY, 0, 0, 0, 5])), PacketResult::Data(i[..5].to_vec()));
        assert_eq!(d.packet(&cdb(&[op::TEST_UNIT_READY])), PacketResult::Done);
        assert_eq!(d.packet(&cdb(&[op::READ_CAPACITY])), PacketResult::Data(vec![0, 0, 0, 99, 0, 0, 8, 0]));
        assert_eq!(
            d.packet(&cdb(&[op::READ_10, 0, 0, 0, 0, 98, 0, 0, 2])),
            PacketResult::Read { lba: 98, blocks: 2 }
        );
        assert_eq!(d.packet(&cdb(&[op::READ_10, 0, 0, 0, 0, 99, 0, 0, 2])), PacketResult::Check(0x54));
        assert_eq!(sense_of(&mut d), [sense::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE, 0]);
        assert_eq!(sense_of(&mut d), [0, 0, 0], "REQUEST SENSE clears");
        assert_eq!(
            d.packet(&cdb(&[op::READ_12, 0, 0, 0, 0, 1, 0, 0, 0, 3])),
            PacketResult::Read { lba: 1, blocks: 3 }
        );
        assert_eq!(
            d.packet(&cdb(&[op::READ_12, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])),
            PacketResult::Check(0x54),
            "no overflow"
        );
        assert_eq!(d.packet(&cdb(&[op::READ_10])), PacketResult::Done, "zero blocks");
        let mut buf = vec![0u8; 4096];
        d.read_sectors(7, &mut buf).unwrap();
        assert_eq!(buf[..4], 7u32.to_le_bytes());
        assert_eq!(buf[2048..2052], 8u32.to_le_bytes());
        assert_eq!(d.packet(&cdb(&[0xFF])), PacketResult::Check(0x54));
        assert_eq!(sense_of(&mut d), [sense::ILLEGAL_REQUEST, asc::INVALID_OPCODE, 0]);
    }

    #[test]
    fn toc_mode_sense_configuration() {
        let mut d = Drive::cdrom(Some(iso(300)), "CD");
        let PacketResult::Data(t) = d.packet(&cdb(&[op::READ_TOC, 0, 0, 0, 0, 0, 0, 0, 100])) else {
            panic!()
        };
        assert_eq!(t, vec![0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x16, 0xAA, 0, 0, 0, 0x01, 0x2C]);
        let PacketResult::Data(m) = d.packet(&cdb(&[op::READ_TOC, 2, 0, 0, 0, 0, 0, 0, 100])) else {
            panic!()
        };
        assert_eq!(&m[16..20], &[0, 0, 6, 0], "lead-out at 300 + 150 frames = 0:06:00");
        let PacketResult::Data(s) = d.packet(&cdb(&[op::READ_TOC, 0, 1, 0, 0, 0, 0, 0, 12])) else {
            panic!()
        };
        assert_eq!(s.len(), 12);
        assert!(matches!(d.packet(&cdb(&[op::READ_TOC, 0, 5, 0, 0, 0, 0, 0, 12])), PacketResult::Check(_)));
        let PacketResult::Data(p) = d.packet(&cdb(&[op::MODE_SENSE_10, 0, 0x2A, 0, 0, 0, 0, 0, 64])) else {
            panic!()
        };
        assert_eq!((p[8], p[1] as usize + 2), (0x2A, p.len()));
        let PacketResult::Data(all) = d.packet(&cdb(&[op::MODE_SENSE_10, 0, 0x3F, 0, 0, 0, 0, 0, 255]))
        else {
            panic!()
        };
        assert_eq!(all.len(), 8 + 8 + 20);
        assert!(matches!(
            d.packet(&cdb(&[op::MODE_SENSE_10, 0, 0x05, 0, 0, 0, 0, 0, 64])),
            PacketResult::Check(_)
        ));
        let PacketResult::Data(g) = d.packet(&cdb(&[op::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 1, 0])) else {
            panic!()
        };
        assert_eq!(&g[6..8], &[0, 8], "current profile CD-ROM");
        assert_eq!(be32(&g[0..4]) as usize + 4, g.len());
        let PacketResult::Data(one) = d.packet(&cdb(&[op::GET_CONFIGURATION, 2, 0, 1, 0, 0, 0, 1, 0])) else {
            panic!()
        };
        assert_eq!(one.len(), 8 + 8, "RT=2: just the core feature");
    }

    #[test]
    fn media_change_and_locking() {
        let mut d = Drive::cdrom(None, "CD");
        assert_eq!(d.packet(&cdb(&[op::TEST_UNIT_READY])), PacketResult::Check(0x24));
        assert_eq!(sense_of(&mut d), [sense::NOT_READY, asc::NO_MEDIUM, 0]);
        let PacketResult::Data(g) = d.packet(&cdb(&[op::GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 8])) else {
            panic!()
        };
        assert_eq!(&g[6..8], &[0, 0], "no current profile without a disc");
        d.insert_media(iso(10));
        let gesn = cdb(&[op::GET_EVENT_STATUS, 1, 0, 0, 0x10, 0, 0, 0, 8]);
        assert_eq!(d.packet(&gesn), PacketResult::Data(vec![0, 6, 4, 0x10, 2, 2, 0, 0]), "new media");
        assert_eq!(d.packet(&gesn), PacketResult::Data(vec![0, 6, 4, 0x10, 0, 2, 0, 0]), "reported once");
        assert_eq!(
            d.packet(&cdb(&[op::GET_EVENT_STATUS, 0, 0, 0, 0x10])),
            PacketResult::Check(0x54),
            "async"
        );
        assert_eq!(d.packet(&cdb(&[op::TEST_UNIT_READY])), PacketResult::Check(0x64), "unit attention");
        assert_eq!(sense_of(&mut d), [sense::UNIT_ATTENTION, asc::MEDIUM_CHANGED, 0]);
        assert_eq!(d.packet(&cdb(&[op::TEST_UNIT_READY])), PacketResult::Done);
        d.packet(&cdb(&[op::PREVENT_ALLOW, 0, 0, 0, 1]));
        assert!(!d.eject(), "locked tray");
        assert_eq!(d.packet(&cdb(&[op::START_STOP_UNIT, 0, 0, 0, 2])), PacketResult::Check(0x54));
        assert_eq!(sense_of(&mut d), [sense::ILLEGAL_REQUEST, asc::REMOVAL_PREVENTED, 2]);
        d.packet(&cdb(&[op::PREVENT_ALLOW, 0, 0, 0, 0]));
        assert_eq!(d.packet(&cdb(&[op::START_STOP_UNIT, 0, 0, 0, 2])), PacketResult::Done);
        assert!(!d.has_media());
        assert_eq!(d.packet(&gesn), PacketResult::Data(vec![0, 6, 4, 0x10, 3, 0, 0, 0]), "removal");
        assert_eq!(d.packet(&cdb(&[op::READ_10, 0, 0, 0, 0, 0, 0, 0, 1])), PacketResult::Check(0x24));
    }
}
