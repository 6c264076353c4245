//! Recordings (`ferrite run --record FILE`): every input the guest saw with its instruction slot, the
//! configuration the machine was built from, content hashes of its images, periodic state hashes and
//! how the run ended. [`crate::replay`] re-executes one.
//!
//! File layout (little-endian): `"FERRREC\0" | version u32 | reserved u32 (0)`, then chunks
//! `kind u8 | len u32 | payload | crc32(kind, len, payload) u32`:
//!
//! - [`CHUNK_CONFIG`] (first, once): the frontend's configuration ([`RecordConfig`]: the `run`
//!   arguments, working directory, engine, checkpoint interval, image hashes);
//! - [`CHUNK_INPUTS`]: inputs, each `slot delta (LEB128) | kind u8 | data` (serial: device, length,
//!   bytes; RTC start: zig-zag seconds; quit and end of input: nothing), slots relative to the
//!   previous input;
//! - [`CHUNK_CHECKPOINT`]: `icount u64 | slot u64 | hashes (cpu, machine, RAM) 3 x u64`, written every
//!   `interval` retired instructions after the inputs before it;
//! - [`CHUNK_END`] (last): the final count, slot, hashes and how the run ended.
//!
//! A recording is read whole and every chunk checked before a replay starts: a truncated, corrupt or
//! other-version file is a one-line [`RecordError`].

use crate::snapshot::StateHasher;
use crate::{GuestInput, Machine, RunOutcome, StampedInput};
use std::fmt;
use std::io::Write;
use vmcore::DeviceId;

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"FERRREC\0";
/// The format version this Ferrite writes and reads.
pub const VERSION: u32 = 1;
/// Chunk: the configuration.
pub const CHUNK_CONFIG: u8 = 1;
/// Chunk: inputs.
pub const CHUNK_INPUTS: u8 = 2;
/// Chunk: a periodic state hash.
pub const CHUNK_CHECKPOINT: u8 = 3;
/// Chunk: the end of the run.
pub const CHUNK_END: u8 = 4;
/// Longest chunk payload accepted.
const MAX_CHUNK: u32 = 64 << 20;
/// Inputs buffered before a chunk is written even between checkpoints.
const INPUT_CHUNK: usize = 64 << 10;
/// Checkpoint interval by default (retired instructions).
pub const DEFAULT_INTERVAL: u64 = 100_000_000;

/// Why a recording cannot be read (or written).
#[derive(Debug)]
pub enum RecordError {
    /// Reading or writing the file failed.
    Io(std::io::Error),
    /// Not a recording.
    NotARecording,
    /// Written by another version of the format.
    Version(u32),
    /// The file ends early (inside a chunk, or without its end chunk).
    Truncated(String),
    /// A checksum or value is wrong.
    Corrupt(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Io(e) => write!(f, "{e}"),
            RecordError::NotARecording => write!(f, "not a Ferrite recording"),
            RecordError::Version(v) => {
                write!(f, "recording format version {v}; this Ferrite reads version {VERSION}")
            }
            RecordError::Truncated(s) => write!(f, "recording truncated: {s}"),
            RecordError::Corrupt(s) => write!(f, "recording corrupt: {s}"),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<std::io::Error> for RecordError {
    fn from(e: std::io::Error) -> Self {
        RecordError::Io(e)
    }
}

/// What the frontend needs to build the same machine again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordConfig {
    /// The `ferrite run` arguments that build the machine (host-dependent values such as `--rtc now`
    /// already replaced by what they gave).
    pub args: Vec<String>,
    /// The working directory relative paths in `args` are relative to.
    pub cwd: String,
    /// The engine that recorded ("interp", "jit").
    pub accel: String,
    /// Retired instructions between two checkpoints.
    pub interval: u64,
    /// (name, content hash) of every image the machine was built from: firmware, kernel, initrd,
    /// modules, disks.
    pub images: Vec<(String, u64)>,
}

/// Hashes of a machine's state, split so a mismatch says where it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateHashes {
    /// The CPU's architectural state.
    pub cpu: u64,
    /// Everything but RAM: CPU, clock, board, devices, the engine's TLB.
    pub machine: u64,
    /// Guest RAM (pages that are all zero are skipped, by index, so the hash costs what RAM in use
    /// costs).
    pub ram: u64,
}

impl StateHashes {
    /// The parts that differ from `other`, named ("CPU", "devices", "RAM").
    pub fn differences(&self, other: &StateHashes) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.cpu != other.cpu {
            d.push("CPU");
        }
        if self.machine != other.machine && self.cpu == other.cpu {
            d.push("devices");
        }
        if self.ram != other.ram {
            d.push("RAM");
        }
        d
    }
}

/// The hashes of `m`'s state now.
pub fn state_hashes(m: &Machine) -> StateHashes {
    let mut w = vmcore::SnapshotWriter::new();
    crate::snapshot::save_cpu(&mut w, &m.cpu);
    let cpu = content_hash(&w.finish());
    let machine = content_hash(&m.save_head());
    let ram = m.board.ram.as_slice();
    let mut h = StateHasher::new();
    for (i, page) in ram.chunks(4096).enumerate() {
        if !page_is_zero(page) {
            h.write(&(i as u64).to_le_bytes());
            h.write(&page_hash(page).to_le_bytes());
        }
    }
    h.write(&(ram.len() as u64).to_le_bytes());
    StateHashes { cpu, machine, ram: h.finish() }
}

/// A 64-bit hash of one page in four independent lanes (the multiply chains overlap, so RAM is hashed
/// at several times the speed of one chain: this is most of a checkpoint's cost).
fn page_hash(page: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes =
        [0x243f_6a88_85a3_08d3u64, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89];
    let mut words = page.chunks_exact(32);
    for c in words.by_ref() {
        for (l, w) in lanes.iter_mut().zip(c.chunks_exact(8)) {
            let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            *l = (*l ^ v).wrapping_mul(K).rotate_left(31);
        }
    }
    let mut h = StateHasher::new();
    lanes.iter().for_each(|l| h.write(&l.to_le_bytes()));
    h.write(words.remainder());
    h.write(&(page.len() as u64).to_le_bytes());
    h.finish()
}

/// Whether every byte of `page` is zero: blocks of 256 bytes, each an OR-reduction over bytes, which
/// the compiler turns into vector loads and ORs (the earlier fold over 16-byte words compiled to a
/// load per byte and was a third of a recording's host time, docs/PERF.md); a page that is not zero
/// is usually found so in its first block.
pub fn page_is_zero(page: &[u8]) -> bool {
    page.chunks(256).all(|block| block.iter().fold(0u8, |a, &b| a | b) == 0)
}

/// A 64-bit content hash of `data` (images, states; not cryptographic).
pub fn content_hash(data: &[u8]) -> u64 {
    let mut h = StateHasher::new();
    h.write(data);
    h.finish()
}

/// A streaming [`content_hash`] for files too large to read at once.
pub struct ContentHasher(StateHasher);

impl ContentHasher {
    /// A new hash.
    pub fn new() -> Self {
        ContentHasher(StateHasher::new())
    }
    /// Adds bytes.
    pub fn write(&mut self, data: &[u8]) {
        self.0.write(data);
    }
    /// The hash of everything written (the same as [`content_hash`] of it all).
    pub fn finish(self) -> u64 {
        self.0.finish()
    }
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// A periodic check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Retired instructions.
    pub icount: u64,
    /// Instruction slot (retired plus idle).
    pub slot: u64,
    /// The state's hashes there.
    pub hashes: StateHashes,
}

/// How the recorded run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// Where: count, slot and hashes.
    pub at: Checkpoint,
    /// The outcome.
    pub outcome: RunOutcome,
}

fn put_leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_leb(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_checkpoint(out: &mut Vec<u8>, c: &Checkpoint) {
    for v in [c.icount, c.slot, c.hashes.cpu, c.hashes.machine, c.hashes.ram] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn encode_input(out: &mut Vec<u8>, last_slot: &mut u64, s: &StampedInput) {
    put_leb(out, s.slot.saturating_sub(*last_slot));
    *last_slot = s.slot.max(*last_slot);
    match &s.input {
        GuestInput::Serial { device, bytes } => {
            out.push(0);
            put_leb(out, u64::from(device.0));
            put_leb(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        GuestInput::RtcStart(t) => {
            out.push(1);
            put_leb(out, ((t << 1) ^ (t >> 63)) as u64);
        }
        GuestInput::Quit => out.push(2),
        GuestInput::EndOfInput => out.push(3),
        GuestInput::Keyboard(codes) => {
            out.push(4);
            put_leb(out, codes.len() as u64);
            out.extend_from_slice(codes);
        }
        GuestInput::Mouse { dx, dy, dz, buttons } => {
            out.push(5);
            out.extend_from_slice(&dx.to_le_bytes());
            out.extend_from_slice(&dy.to_le_bytes());
            out.push(*dz as u8);
            out.push(*buttons);
        }
    }
}

/// Writes a recording as the run goes: install [`Recorder::input_hook`] on the machine, call
/// [`Recorder::checkpoint`] at every checkpoint and [`Recorder::finish`] at the end.
pub struct Recorder {
    w: std::io::BufWriter<std::fs::File>,
    pending: std::rc::Rc<std::cell::RefCell<(Vec<u8>, u64, u64)>>,
    /// Bytes written so far.
    pub bytes: u64,
    /// Checkpoints written so far.
    pub checkpoints: u64,
    /// Host time spent writing checkpoints (hashing the state): the cost of recording, for `--stats`.
    pub checkpoint_time: std::time::Duration,
    error: Option<std::io::Error>,
}

impl Recorder {
    /// Creates `path` and writes the header and `config`.
    pub fn create(path: &std::path::Path, config: &RecordConfig) -> Result<Recorder, RecordError> {
        let f = std::fs::File::create(path)?;
        let mut r = Recorder {
            w: std::io::BufWriter::new(f),
            pending: Default::default(),
            bytes: 0,
            checkpoints: 0,
            checkpoint_time: Default::default(),
            error: None,
        };
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        r.w.write_all(&head)?;
        r.bytes += head.len() as u64;
        let mut p = Vec::new();
        put_leb(&mut p, config.args.len() as u64);
        config.args.iter().for_each(|a| put_str(&mut p, a));
        put_str(&mut p, &config.cwd);
        put_str(&mut p, &config.accel);
        put_leb(&mut p, config.interval);
        put_leb(&mut p, config.images.len() as u64);
        for (name, h) in &config.images {
            put_str(&mut p, name);
            p.extend_from_slice(&h.to_le_bytes());
        }
        r.chunk(CHUNK_CONFIG, &p);
        r.w.flush()?;
        r.error.take().map_or(Ok(r), |e| Err(e.into()))
    }

    /// The hook for [`Machine::record_inputs`]: encodes every input into the pending chunk.
    pub fn input_hook(&self) -> crate::InputRecorder {
        let pending = self.pending.clone();
        Box::new(move |s| {
            let mut p = pending.borrow_mut();
            let (buf, last, n) = &mut *p;
            encode_input(buf, last, s);
            *n += 1;
        })
    }

    /// Inputs recorded so far.
    pub fn inputs(&self) -> u64 {
        self.pending.borrow().2
    }

    fn chunk(&mut self, kind: u8, payload: &[u8]) {
        let mut crc = crc32fast::Hasher::new();
        let len = (payload.len() as u32).to_le_bytes();
        crc.update(&[kind]);
        crc.update(&len);
        crc.update(payload);
        let res = self
            .w
            .write_all(&[kind])
            .and_then(|_| self.w.write_all(&len))
            .and_then(|_| self.w.write_all(payload))
            .and_then(|_| self.w.write_all(&crc.finalize().to_le_bytes()));
        self.bytes += payload.len() as u64 + 9;
        if let Err(e) = res {
            self.error.get_or_insert(e);
        }
    }

    fn flush_inputs(&mut self, force: bool) {
        let buf = {
            let mut p = self.pending.borrow_mut();
            if p.0.is_empty() || (!force && p.0.len() < INPUT_CHUNK) {
                return;
            }
            std::mem::take(&mut p.0)
        };
        self.chunk(CHUNK_INPUTS, &buf);
    }

    /// Writes the pending inputs and a checkpoint of `m`'s state.
    pub fn checkpoint(&mut self, m: &Machine) -> Result<Checkpoint, RecordError> {
        let started = std::time::Instant::now();
        self.checkpoints += 1;
        self.flush_inputs(true);
        let c = Checkpoint { icount: m.cpu.icount, slot: m.slot(), hashes: state_hashes(m) };
        let mut p = Vec::new();
        put_checkpoint(&mut p, &c);
        self.chunk(CHUNK_CHECKPOINT, &p);
        let res = self.w.flush();
        self.checkpoint_time += started.elapsed();
        match self.error.take() {
            Some(e) => Err(e.into()),
            None => res.map(|_| c).map_err(Into::into),
        }
    }

    /// Writes the pending inputs and the end of the run.
    pub fn finish(mut self, m: &Machine, outcome: &RunOutcome) -> Result<u64, RecordError> {
        self.flush_inputs(true);
        let at = Checkpoint { icount: m.cpu.icount, slot: m.slot(), hashes: state_hashes(m) };
        let mut p = Vec::new();
        put_checkpoint(&mut p, &at);
        match outcome {
            RunOutcome::Exited(c) => {
                p.push(0);
                p.extend_from_slice(&c.to_le_bytes());
            }
            // A debugger's stop ends a run like a limit does (a recording is never made under the stub).
            RunOutcome::InstructionLimit | RunOutcome::DebugStop => p.push(1),
            RunOutcome::Quit => p.push(2),
            RunOutcome::Stopped { reason, .. } => {
                p.push(3);
                put_str(&mut p, reason);
            }
        }
        self.chunk(CHUNK_END, &p);
        self.w.flush()?;
        match self.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(self.bytes),
        }
    }
}

/// A recording, read and checked whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// The configuration.
    pub config: RecordConfig,
    /// Every input, in order.
    pub inputs: Vec<StampedInput>,
    /// The periodic checks, in order.
    pub checkpoints: Vec<Checkpoint>,
    /// How the run ended.
    pub end: End,
}

/// Reads values out of one chunk's payload.
struct Rd<'a> {
    d: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn bad(&self, why: &str) -> RecordError {
        RecordError::Corrupt(format!("{} chunk: {why}", self.what))
    }
    fn take(&mut self, n: u64) -> Result<&'a [u8], RecordError> {
        let left = (self.d.len() - self.pos) as u64;
        if n > left {
            return Err(self.bad("a value runs past the chunk"));
        }
        let s = &self.d[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn leb(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("a number is too long"))
    }
    fn string(&mut self) -> Result<String, RecordError> {
        let n = self.leb()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("a string is not UTF-8"))
    }
    fn checkpoint(&mut self) -> Result<Checkpoint, RecordError> {
        let (icount, slot) = (self.u64()?, self.u64()?);
        let hashes = StateHashes { cpu: self.u64()?, machine: self.u64()?, ram: self.u64()? };
        Ok(Checkpoint { icount, slot, hashes })
    }
    fn done(&self) -> Result<(), RecordError> {
        if self.pos == self.d.len() { Ok(()) } else { Err(self.bad("bytes after its contents")) }
    }
}

impl Recording {
    /// Reads the recording at `path`.
    pub fn read_file(path: &std::path::Path) -> Result<Recording, RecordError> {
        Recording::parse(&std::fs::read(path)?)
    }

    /// Parses and checks a whole recording.
    pub fn parse(data: &[u8]) -> Result<Recording, RecordError> {
        if data.len() < 16 || &data[..8] != MAGIC {
            return Err(if data.len() < 16 && MAGIC.starts_with(data) && !data.is_empty() {
                RecordError::Truncated("in the header".into())
            } else {
                RecordError::NotARecording
            });
        }
        let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        if data[12..16] != [0; 4] {
            return Err(RecordError::Corrupt("reserved header bytes are not zero".into()));
        }
        let mut pos = 16;
        let mut config = None;
        let mut inputs = Vec::new();
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        let mut end = None;
        let mut last_slot = 0u64;
        while pos < data.len() {
            if end.is_some() {
                return Err(RecordError::Corrupt(format!("data after the end chunk at byte {pos}")));
            }
            if data.len() - pos < 5 {
                return Err(RecordError::Truncated(format!("inside the chunk header at byte {pos}")));
            }
            let kind = data[pos];
            let len = u32::from_le_bytes([data[pos + 1], data[pos + 2], data[pos + 3], data[pos + 4]]);
            if len > MAX_CHUNK {
                return Err(RecordError::Corrupt(format!("chunk of {len} bytes at byte {pos}")));
            }
            let body = pos + 5;
            let Some(crc_at) = body.checked_add(len as usize).filter(|e| e + 4 <= data.len()) else {
                return Err(RecordError::Truncated(format!("inside the chunk at byte {pos}")));
            };
            let stored =
                u32::from_le_bytes([data[crc_at], data[crc_at + 1], data[crc_at + 2], data[crc_at + 3]]);
            if crc32fast::hash(&data[pos..crc_at]) != stored {
                return Err(RecordError::Corrupt(format!("checksum of the chunk at byte {pos}")));
            }
            let payload = &data[body..crc_at];
            pos = crc_at + 4;
            if (kind == CHUNK_CONFIG) != config.is_none() {
                return Err(RecordError::Corrupt(format!("chunk kind {kind} at byte {}", body - 5)));
            }
            match kind {
                CHUNK_CONFIG => {
                    let mut r = Rd { d: payload, pos: 0, what: "configuration" };
                    let n = r.leb()?;
                    let mut args = Vec::new();
                    for _ in 0..n {
                        args.push(r.string()?);
                    }
                    let cwd = r.string()?;
                    let accel = r.string()?;
                    let interval = r.leb()?;
                    let n = r.leb()?;
                    let mut images = Vec::new();
                    for _ in 0..n {
                        images.push((r.string()?, r.u64()?));
                    }
                    r.done()?;
                    if interval == 0 {
                        return Err(r.bad("checkpoint interval 0"));
                    }
                    config = Some(RecordConfig { args, cwd, accel, interval, images });
                }
                CHUNK_INPUTS => {
                    let mut r = Rd { d: payload, pos: 0, what: "inputs" };
                    while r.pos < payload.len() {
                        let slot = last_slot.checked_add(r.leb()?).ok_or_else(|| r.bad("slot overflow"))?;
                        last_slot = slot;
                        let input = match r.u8()? {
                            0 => {
                                let device = u32::try_from(r.leb()?).map_err(|_| r.bad("device id"))?;
                                let n = r.leb()?;
                                let bytes = r.take(n)?.to_vec();
                                GuestInput::Serial { device: DeviceId(device), bytes }
                            }
                            1 => {
                                let z = r.leb()?;
                                GuestInput::RtcStart(((z >> 1) as i64) ^ -((z & 1) as i64))
                            }
                            2 => GuestInput::Quit,
                            3 => GuestInput::EndOfInput,
                            4 => {
                                let n = r.leb()?;
                                GuestInput::Keyboard(r.take(n)?.to_vec())
                            }
                            5 => {
                                let d = r.take(6)?;
                                GuestInput::Mouse {
                                    dx: i16::from_le_bytes([d[0], d[1]]),
                                    dy: i16::from_le_bytes([d[2], d[3]]),
                                    dz: d[4] as i8,
                                    buttons: d[5],
                                }
                            }
                            k => return Err(r.bad(&format!("input kind {k}"))),
                        };
                        inputs.push(StampedInput { slot, input });
                    }
                }
                CHUNK_CHECKPOINT => {
                    let mut r = Rd { d: payload, pos: 0, what: "checkpoint" };
                    let c = r.checkpoint()?;
                    r.done()?;
                    if checkpoints.last().is_some_and(|l| l.icount >= c.icount) {
                        return Err(r.bad("checkpoints out of order"));
                    }
                    checkpoints.push(c);
                }
                CHUNK_END => {
                    let mut r = Rd { d: payload, pos: 0, what: "end" };
                    let at = r.checkpoint()?;
                    let outcome = match r.u8()? {
                        0 => {
                            let b = r.take(4)?;
                            RunOutcome::Exited(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        }
                        1 => RunOutcome::InstructionLimit,
                        2 => RunOutcome::Quit,
                        3 => RunOutcome::Stopped { reason: r.string()?, dump: String::new() },
                        k => return Err(r.bad(&format!("outcome {k}"))),
                    };
                    r.done()?;
                    end = Some(End { at, outcome });
                }
                k => {
                    return Err(RecordError::Corrupt(format!("unknown chunk kind {k} at byte {}", body - 5)));
                }
            }
        }
        let config = config.ok_or_else(|| RecordError::Truncated("no configuration".into()))?;
        let end = end.ok_or_else(|| {
            RecordError::Truncated("no end chunk (the recording run did not finish)".into())
        })?;
        Ok(Recording { config, inputs, checkpoints, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_hash_sees_every_byte_and_its_position() {
        let base: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let h = page_hash(&base);
        for i in [0usize, 7, 8, 31, 32, 2048, 4095] {
            let mut d = base.clone();
            d[i] ^= 1;
            assert_ne!(page_hash(&d), h, "byte {i}");
        }
        let mut swapped = base.clone();
        swapped.swap(0, 8);
        assert_ne!(page_hash(&swapped), h, "lanes are not interchangeable");
        assert!(page_is_zero(&[0; 4096]) && !page_is_zero(&base));
        // Every position, in a page and in a shorter tail.
        for len in [4096usize, 1000, 1] {
            for at in 0..len {
                let mut p = vec![0u8; len];
                p[at] = 0x80;
                assert!(!page_is_zero(&p), "byte {at} of {len}");
            }
            assert!(page_is_zero(&vec![0u8; len]));
        }
        assert!(page_is_zero(&[]));
        let mut one = [0u8; 4096];
        one[4095] = 1;
        assert!(!page_is_zero(&one));
    }

    #[test]
    fn numbers_and_inputs_round_trip_through_the_encoding() {
        let inputs = vec![
            StampedInput { slot: 0, input: GuestInput::RtcStart(-5) },
            StampedInput { slot: 0, input: GuestInput::RtcStart(1_767_225_600) },
            StampedInput {
                slot: 300_000,
                input: GuestInput::Serial { device: DeviceId(4), bytes: b"ls\n".to_vec() },
            },
            StampedInput { slot: 300_007, input: GuestInput::Keyboard(vec![0xe0, 0xf0, 0x75]) },
            StampedInput { slot: 300_009, input: GuestInput::Mouse { dx: -300, dy: 2, dz: -1, buttons: 5 } },
            StampedInput { slot: u64::MAX / 3, input: GuestInput::Quit },
            StampedInput { slot: u64::MAX / 3, input: GuestInput::EndOfInput },
        ];
        let mut buf = Vec::new();
        let mut last = 0;
        inputs.iter().for_each(|s| encode_input(&mut buf, &mut last, s));
        // Parse through a whole file with these inputs.
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&VERSION.to_le_bytes());
        file.extend_from_slice(&0u32.to_le_bytes());
        let chunk = |file: &mut Vec<u8>, kind: u8, p: &[u8]| {
            let start = file.len();
            file.push(kind);
            file.extend_from_slice(&(p.len() as u32).to_le_bytes());
            file.extend_from_slice(p);
            let crc = crc32fast::hash(&file[start..]);
            file.extend_from_slice(&crc.to_le_bytes());
        };
        let mut cfg = Vec::new();
        put_leb(&mut cfg, 1);
        put_str(&mut cfg, "--rom");
        put_str(&mut cfg, "/tmp");
        put_str(&mut cfg, "interp");
        put_leb(&mut cfg, 1000);
        put_leb(&mut cfg, 0);
        chunk(&mut file, CHUNK_CONFIG, &cfg);
        chunk(&mut file, CHUNK_INPUTS, &buf);
        let mut end = Vec::new();
        put_checkpoint(
            &mut end,
            &Checkpoint { icount: 7, slot: 9, hashes: StateHashes { cpu: 1, machine: 2, ram: 3 } },
        );
        end.push(0);
        end.extend_from_slice(&(-3i32).to_le_bytes());
        chunk(&mut file, CHUNK_END, &end);
        let rec = Recording::parse(&file).unwrap();
        assert_eq!(rec.inputs, inputs);
        assert_eq!(rec.config.args, vec!["--rom".to_string()]);
        assert_eq!(rec.end.outcome, RunOutcome::Exited(-3));
        // Every cut is refused, and so is every single flipped bit.
        for cut in 0..file.len() {
            assert!(Recording::parse(&file[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            assert!(Recording::parse(&bad).is_err(), "flipped byte {i}");
        }
    }
}
