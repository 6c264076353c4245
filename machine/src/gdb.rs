//! The GDB remote stub (the `gdbstub` crate) and the debugging run loop around it.
//!
//! - **Where it listens**: [`Endpoint`]: `tcp::PORT` listens on 127.0.0.1 (QEMU's listens on every
//!   interface; ours does not), `tcp:HOST:PORT` where given, `unix:PATH` on a Unix socket created with
//!   mode 0600. The monitor ([`crate::monitor`]) takes the same forms.
//! - **Registers** through a target description: the amd64 core (GPRs, RIP, EFLAGS, selectors, x87),
//!   SSE, `fs_base`/`gs_base`, and a Ferrite feature with the other segment bases, the descriptor
//!   tables, CR0/2/3/4/8, EFER, DR0-3/6/7, the system MSRs and `icount` (the retired-instruction count,
//!   read-only). Written registers are stored as given (a selector without loading its descriptor).
//! - **Memory** by linear address, translated by a page walk of its own that neither sets accessed or
//!   dirty bits, nor touches the TLB, nor writes CR2; only RAM and ROM are reachable (an address on a
//!   device reads as an error: reading a device register has effects). A write drops decoded code on
//!   the page.
//! - **Breakpoints** (software and hardware alike) are RIP values the interpreter checks before every
//!   instruction of a block holding one (`cpu::Interpreter::stops`; such blocks never run as JIT code),
//!   so guest memory is never patched. **Watchpoints** are kept apart from the guest's debug registers
//!   (`cpu::debug::HostWatch`): the watched pages stay out of the TLB and an access stops the machine
//!   after the instruction. Setting one drops the TLB entries of its pages (a guest relying on a stale
//!   translation there would see the fresh one).
//! - **Stepping** runs one instruction (an interrupt due before it is delivered first, as on the CPU);
//!   **continue** runs in slices, looking for Ctrl-C between them.
//! - **Reverse** stepping and continuing go through [`crate::reverse::History`].
//! - **Under KVM** (`--accel kvm`) registers and memory are the same (the engine moves the vCPU's state
//!   into `CpuState` at every exit and back at every entry; guest RAM is shared with KVM), but
//!   breakpoints and watchpoints take the CPU's four debug registers (`crate::kvm::GuestDebugRequest`:
//!   a breakpoint is one slot, a watchpoint one per aligned 1/2/4/8-byte piece; past four gdb gets an
//!   error), stepping is `KVM_GUESTDBG_SINGLESTEP` and runs in slices like a continue, and there is no
//!   history: gdb is told reverse execution is unsupported. INT3 is never intercepted, so the guest's
//!   own reach the guest (KVM's `USE_SW_BP` is not used: `kvm::probe_guest_debug` finds it ignored
//!   on PVM hosts, and guest memory is never patched).
//! - A malformed or oversized packet closes that connection with a logged reason; the guest is not
//!   touched: the stub's breakpoints are dropped and the machine runs on, and the stub takes the next
//!   connection.

use crate::monitor::{self, Control};
use crate::reverse::History;
use crate::{Machine, RunOutcome};
use cpu::CpuBus;
use cpu::debug::HostWatch;
use cpu::paging::{Access, AccessKind};
use cpu::state::{CpuState, Seg};
use gdbstub::arch::{Arch, Registers};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::{DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Largest packet the stub accepts; a longer one closes the connection.
pub const MAX_PACKET: usize = 16 * 1024;
/// Instructions run between two looks at the connection while the guest runs.
const SLICE: u64 = 2_000_000;
/// How often an idle loop (guest stopped, waiting for a debugger or a monitor) looks again.
const POLL: Duration = Duration::from_millis(20);

/// Where a debugger or monitor listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (created with mode 0600; refused if the path exists).
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `tcp::PORT` (127.0.0.1), `tcp:HOST:PORT`, `unix:PATH`, or a bare port.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let tcp = |host: &str, port: &str| -> Result<Endpoint, String> {
            let port: u16 = port.parse().map_err(|_| format!("bad port `{port}` in `{s}`"))?;
            let host = if host.is_empty() { "127.0.0.1" } else { host };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let ip: std::net::IpAddr = host.parse().map_err(|_| format!("bad address `{host}` in `{s}`"))?;
            Ok(Endpoint::Tcp(SocketAddr::new(ip, port)))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("`{s}`: empty socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) =
                rest.rsplit_once(':').ok_or_else(|| format!("`{s}`: expected tcp:[HOST]:PORT"))?;
            return tcp(host, port);
        }
        if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
            return tcp("", s);
        }
        Err(format!("`{s}`: expected tcp::PORT, tcp:HOST:PORT or unix:PATH"))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A listening socket (TCP or Unix).
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix; the path is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
}

/// A connected stream.
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix.
    Unix(UnixStream),
}

impl Listener {
    /// Binds `ep`. A Unix socket is created with mode 0600 (under a umask of 0177, so it never exists
    /// with wider permissions).
    pub fn bind(ep: &Endpoint) -> Result<Listener, String> {
        let l = match ep {
            Endpoint::Tcp(a) => Listener::Tcp(TcpListener::bind(a).map_err(|e| format!("{ep}: {e}"))?),
            Endpoint::Unix(p) => {
                if std::fs::symlink_metadata(p).is_ok() {
                    return Err(format!("{ep}: the path exists"));
                }
                // Bound (and listening) under a temporary name, then renamed into place, so that the
                // path appears only once connections are accepted: a client that waits for the file
                // and connects at once was refused when it came between bind() and listen().
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let tmp = p.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                // SAFETY: umask only changes the process's file-creation mask; it is restored at once.
                let old = unsafe { libc::umask(0o177) };
                let r = UnixListener::bind(&tmp);
                // SAFETY: as above, restoring the previous mask.
                unsafe { libc::umask(old) };
                let l = r.map_err(|e| format!("{ep}: {e}"))?;
                if let Err(e) = std::fs::rename(&tmp, p) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(format!("{ep}: {e}"));
                }
                Listener::Unix(l, p.clone())
            }
        };
        match &l {
            Listener::Tcp(t) => t.set_nonblocking(true),
            Listener::Unix(u, _) => u.set_nonblocking(true),
        }
        .map_err(|e| format!("{ep}: {e}"))?;
        Ok(l)
    }

    /// The local address (for `tcp::0`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(t) => t.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// A waiting connection, if any (never blocks). The stream is blocking.
    pub fn accept(&self) -> Option<Stream> {
        let s = match self {
            Listener::Tcp(t) => t.accept().ok().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(u, _) => u.accept().ok().map(|(s, _)| Stream::Unix(s)),
        }?;
        let ok = match &s {
            Stream::Tcp(t) => t.set_nonblocking(false).and_then(|_| t.set_nodelay(true)),
            Stream::Unix(u) => u.set_nonblocking(false),
        };
        ok.ok().map(|_| s)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Stream {
    /// Sets non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(t) => t.set_nonblocking(on),
            Stream::Unix(u) => u.set_nonblocking(on),
        }
    }

    fn into_conn(self) -> Box<dyn ConnectionExt<Error = io::Error>> {
        let inner: Box<dyn ConnectionExt<Error = io::Error>> = match self {
            Stream::Tcp(t) => Box::new(t),
            Stream::Unix(u) => Box::new(u),
        };
        Box::new(Guarded { inner, guard: PacketGuard::default() })
    }
}

// ---------------------------------------------------------------------------------------------
// The packet guard: what gdb sends is checked before gdbstub acts on it.

/// Most bytes one `m` (or `x`) request may ask for. gdb asks for at most half the packet size it
/// was told (two hex digits a byte); gdbstub itself would stream a reply of any length, chunk after
/// chunk, with the guest stopped.
pub const MAX_READ: u64 = MAX_PACKET as u64;
/// Most breakpoints (software and hardware together) one connection may set; each is compared with
/// RIP, and a flood would only slow the guest.
pub const MAX_BREAKPOINTS: usize = 4096;

/// Follows the client's byte stream and checks each packet when its body is complete (at `#`, before
/// gdbstub sees that byte): a packet too long, a memory read asking for more than [`MAX_READ`], an
/// `M` or binary `X` write whose data is not the length it declares. A refused packet ends the
/// connection with the reason (gdbstub reports the read error, the session logs it).
#[derive(Default)]
struct PacketGuard {
    in_packet: bool,
    body: Vec<u8>,
}

impl PacketGuard {
    /// Takes one byte from the client; an error is the reason to close the connection.
    fn feed(&mut self, b: u8) -> Result<(), String> {
        if !self.in_packet {
            // Acks, Ctrl-C and the checksum digits after `#` are outside packets.
            if b == b'$' {
                self.in_packet = true;
                self.body.clear();
            }
            return Ok(());
        }
        if b == b'#' {
            self.in_packet = false;
            return check_packet(&self.body);
        }
        if self.body.len() >= MAX_PACKET {
            self.in_packet = false;
            self.body = Vec::new();
            return Err(format!("a packet longer than {MAX_PACKET} bytes"));
        }
        self.body.push(b);
        Ok(())
    }
}

/// The LEN of `ADDR,LEN` (hex), if it parses; an unparsable one is left to gdbstub's parser.
fn packet_len(args: &[u8]) -> Option<u64> {
    let comma = args.iter().position(|&c| c == b',')?;
    let len = std::str::from_utf8(&args[comma + 1..]).ok()?;
    u64::from_str_radix(len, 16).ok()
}

/// Checks one complete packet body (between `$` and `#`).
fn check_packet(body: &[u8]) -> Result<(), String> {
    let Some((&cmd, rest)) = body.split_first() else { return Ok(()) };
    match cmd {
        b'm' | b'x' => {
            if let Some(len) = packet_len(rest)
                && len > MAX_READ
            {
                return Err(format!(
                    "`{}` asks for {len} bytes of memory, more than {MAX_READ}",
                    cmd as char
                ));
            }
        }
        b'M' | b'X' => {
            let Some(colon) = rest.iter().position(|&c| c == b':') else { return Ok(()) };
            let Some(len) = packet_len(&rest[..colon]) else { return Ok(()) };
            let data = &rest[colon + 1..];
            let carried = if cmd == b'M' {
                if data.len() % 2 != 0 {
                    return Err(format!("`M` carries an odd number ({}) of hex digits", data.len()));
                }
                data.len() as u64 / 2
            } else {
                // Binary data: `}` escapes the byte after it.
                let mut n = 0u64;
                let mut i = 0;
                while i < data.len() {
                    if data[i] == b'}' {
                        if i + 1 == data.len() {
                            return Err("`X` data ends in an escape".into());
                        }
                        i += 1;
                    }
                    i += 1;
                    n += 1;
                }
                n
            };
            if carried != len {
                return Err(format!("`{}` declares {len} bytes and carries {carried}", cmd as char));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A gdbstub connection with [`PacketGuard`] on its input.
struct Guarded {
    inner: Box<dyn ConnectionExt<Error = io::Error>>,
    guard: PacketGuard,
}

impl gdbstub::conn::Connection for Guarded {
    type Error = io::Error;
    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.inner.write(byte)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
    fn on_session_start(&mut self) -> io::Result<()> {
        self.inner.on_session_start()
    }
}

impl ConnectionExt for Guarded {
    fn read(&mut self) -> io::Result<u8> {
        let b = self.inner.read()?;
        self.guard.feed(b).map_err(io::Error::other)?;
        Ok(b)
    }
    fn peek(&mut self) -> io::Result<Option<u8>> {
        self.inner.peek()
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(t) => io::Read::read(t, buf),
            Stream::Unix(u) => io::Read::read(u, buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(t) => io::Write::write(t, buf),
            Stream::Unix(u) => io::Write::write(u, buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Memory as a debugger sees it.

/// Reads guest-physical memory for a debugger: RAM and ROM only (no device is touched). Returns the
/// bytes read, stopping at the first byte that is not RAM or ROM.
pub fn read_phys(m: &Machine, addr: u64, buf: &mut [u8]) -> usize {
    use vmcore::map::RegionKind;
    let mut done = 0;
    while done < buf.len() {
        let a = addr.wrapping_add(done as u64);
        let Some(r) = m.board.map.lookup(a) else { break };
        let off = a - r.start;
        let n = ((r.size - off) as usize).min(buf.len() - done);
        let out = &mut buf[done..done + n];
        match r.kind {
            RegionKind::Ram { offset } => {
                if !m.board.ram.read(offset + off, out) {
                    break;
                }
            }
            RegionKind::Rom { rom, offset } => {
                let Some(img) = m.board.map.rom_image(rom) else { break };
                let s = (offset + off) as usize;
                let Some(src) = img.get(s..s + n) else { break };
                out.copy_from_slice(src);
            }
            _ => break,
        }
        done += n;
    }
    done
}

/// Writes guest-physical RAM for a debugger (ROM and devices are not written) and drops decoded code
/// on the pages written. Returns the bytes written.
pub fn write_phys(m: &mut Machine, addr: u64, data: &[u8]) -> usize {
    use vmcore::map::RegionKind;
    let mut done = 0;
    while done < data.len() {
        let a = addr.wrapping_add(done as u64);
        let Some(r) = m.board.map.lookup(a).copied() else { break };
        let off = a - r.start;
        let n = ((r.size - off) as usize).min(data.len() - done);
        let RegionKind::Ram { offset } = r.kind else { break };
        if !m.board.ram.write(offset + off, &data[done..done + n]) {
            break;
        }
        let written = a..a + n as u64;
        m.invalidate_code(std::slice::from_ref(&written));
        done += n;
    }
    done
}

/// A bus for the debugger's page walk: reads RAM/ROM, drops writes (accessed/dirty bits), has no
/// devices.
struct WalkBus<'a>(&'a Machine);

impl CpuBus for WalkBus<'_> {
    fn ram_page(&mut self, _page: u64, _write: bool) -> Option<std::ptr::NonNull<u8>> {
        None
    }
    fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
        let n = read_phys(self.0, addr, data);
        data[n..].fill(0xff);
    }
    fn write_phys(&mut self, _addr: u64, _data: &[u8]) {}
    fn io_in(&mut self, _port: u16, _size: u8) -> u32 {
        !0
    }
    fn io_out(&mut self, _port: u16, _size: u8, _value: u32) {}
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn tsc(&mut self, _icount: u64) -> u64 {
        0
    }
}

/// The guest-physical address of linear `lin` under the current paging mode, by a walk with no side
/// effects (no accessed/dirty bits, no TLB fill, no CR2). Supervisor view: user and supervisor pages
/// alike, writes allowed to read-only pages (a debugger's writes), SMAP ignored.
pub fn translate(m: &Machine, lin: u64) -> Option<u64> {
    let mut st: CpuState = m.cpu.clone();
    st.cr4 &= !cpu::state::cr4::SMAP;
    st.cr0 &= !cpu::state::cr0::WP;
    if st.efer & cpu::state::efer::LMA != 0 && !cpu::mem::is_canonical(lin) {
        return None;
    }
    let mut bus = WalkBus(m);
    let t = cpu::paging::translate(
        &mut st,
        &mut bus,
        lin,
        Access { kind: AccessKind::Read, user: false, implicit: false },
    )
    .ok()?;
    Some(t.page | (lin & 0xfff))
}

/// Reads linear memory (page by page through [`translate`]). Returns the bytes read.
pub fn read_virt(m: &Machine, lin: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let a = lin.wrapping_add(done as u64);
        let n = ((0x1000 - (a & 0xfff)) as usize).min(buf.len() - done);
        let Some(p) = translate(m, a) else { break };
        let got = read_phys(m, p, &mut buf[done..done + n]);
        done += got;
        if got < n {
            break;
        }
    }
    done
}

/// Writes linear memory. Returns the bytes written.
pub fn write_virt(m: &mut Machine, lin: u64, data: &[u8]) -> usize {
    let mut done = 0;
    while done < data.len() {
        let a = lin.wrapping_add(done as u64);
        let n = ((0x1000 - (a & 0xfff)) as usize).min(data.len() - done);
        let Some(p) = translate(m, a) else { break };
        let got = write_phys(m, p, &data[done..done + n]);
        done += got;
        if got < n {
            break;
        }
    }
    done
}

// ---------------------------------------------------------------------------------------------
// Registers and the target description.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum R {
    Gpr(usize),
    Rip,
    Eflags,
    Sel(Seg),
    Base(Seg),
    St(usize),
    Fctrl,
    Fstat,
    Ftag,
    Fiseg,
    Fioff,
    Foseg,
    Fooff,
    Fop,
    Xmm(usize),
    Mxcsr,
    Cr(u8),
    Efer,
    GdtrBase,
    GdtrLimit,
    IdtrBase,
    IdtrLimit,
    Ldtr,
    Tr,
    Dr(usize),
    Msr(usize),
    Icount,
}

struct RegDef {
    name: String,
    bytes: usize,
    r: R,
    ty: &'static str,
    feature: usize,
}

const FEATURES: [&str; 4] =
    ["org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments", "org.ferrite.gdb.x86.sys"];

/// The system MSRs shown (name, field).
const MSRS: [&str; 11] = [
    "star",
    "lstar",
    "cstar",
    "fmask",
    "kernel_gs_base",
    "sysenter_cs",
    "sysenter_esp",
    "sysenter_eip",
    "pat",
    "apic_base",
    "tsc_aux",
];

fn msr_ref(st: &mut CpuState, i: usize) -> &mut u64 {
    let m = &mut st.msr;
    match i {
        0 => &mut m.star,
        1 => &mut m.lstar,
        2 => &mut m.cstar,
        3 => &mut m.sfmask,
        4 => &mut m.kernel_gs_base,
        5 => &mut m.sysenter_cs,
        6 => &mut m.sysenter_esp,
        7 => &mut m.sysenter_eip,
        8 => &mut m.pat,
        9 => &mut m.apic_base,
        _ => &mut m.tsc_aux,
    }
}

fn regs() -> &'static [RegDef] {
    static REGS: OnceLock<Vec<RegDef>> = OnceLock::new();
    REGS.get_or_init(|| {
        let mut v = Vec::new();
        let mut add = |name: &str, bytes, r, ty, feature| {
            v.push(RegDef { name: name.to_string(), bytes, r, ty, feature });
        };
        // gdb's amd64 order; CpuState's GPRs are in encoding order (rax rcx rdx rbx rsp rbp rsi rdi).
        for (n, i) in [("rax", 0), ("rbx", 3), ("rcx", 1), ("rdx", 2), ("rsi", 6), ("rdi", 7)] {
            add(n, 8, R::Gpr(i), "int64", 0);
        }
        add("rbp", 8, R::Gpr(5), "data_ptr", 0);
        add("rsp", 8, R::Gpr(4), "data_ptr", 0);
        for i in 8..16 {
            add(&format!("r{i}"), 8, R::Gpr(i), "int64", 0);
        }
        add("rip", 8, R::Rip, "code_ptr", 0);
        add("eflags", 4, R::Eflags, "int32", 0);
        for (n, s) in [
            ("cs", Seg::Cs),
            ("ss", Seg::Ss),
            ("ds", Seg::Ds),
            ("es", Seg::Es),
            ("fs", Seg::Fs),
            ("gs", Seg::Gs),
        ] {
            add(n, 4, R::Sel(s), "int32", 0);
        }
        for i in 0..8 {
            add(&format!("st{i}"), 10, R::St(i), "i387_ext", 0);
        }
        for (n, r) in [
            ("fctrl", R::Fctrl),
            ("fstat", R::Fstat),
            ("ftag", R::Ftag),
            ("fiseg", R::Fiseg),
            ("fioff", R::Fioff),
            ("foseg", R::Foseg),
            ("fooff", R::Fooff),
            ("fop", R::Fop),
        ] {
            add(n, 4, r, "int", 0);
        }
        for i in 0..16 {
            add(&format!("xmm{i}"), 16, R::Xmm(i), "vec128", 1);
        }
        add("mxcsr", 4, R::Mxcsr, "int", 1);
        add("fs_base", 8, R::Base(Seg::Fs), "int64", 2);
        add("gs_base", 8, R::Base(Seg::Gs), "int64", 2);
        for (n, s) in [("cs_base", Seg::Cs), ("ss_base", Seg::Ss), ("ds_base", Seg::Ds), ("es_base", Seg::Es)]
        {
            add(n, 8, R::Base(s), "int64", 3);
        }
        for (n, c) in [("cr0", 0), ("cr2", 2), ("cr3", 3), ("cr4", 4), ("cr8", 8)] {
            add(n, 8, R::Cr(c), "int64", 3);
        }
        add("efer", 8, R::Efer, "int64", 3);
        add("gdtr_base", 8, R::GdtrBase, "int64", 3);
        add("gdtr_limit", 4, R::GdtrLimit, "int32", 3);
        add("idtr_base", 8, R::IdtrBase, "int64", 3);
        add("idtr_limit", 4, R::IdtrLimit, "int32", 3);
        add("ldtr", 4, R::Ldtr, "int32", 3);
        add("tr", 4, R::Tr, "int32", 3);
        for i in [0usize, 1, 2, 3, 6, 7] {
            add(&format!("dr{i}"), 8, R::Dr(i), "int64", 3);
        }
        for (i, n) in MSRS.iter().enumerate() {
            add(n, 8, R::Msr(i), "int64", 3);
        }
        add("icount", 8, R::Icount, "uint64", 3);
        v
    })
}

/// The target description (XML) the stub gives gdb.
pub fn target_xml() -> &'static str {
    static XML: OnceLock<String> = OnceLock::new();
    XML.get_or_init(|| {
        use std::fmt::Write;
        let mut x = String::from(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n\
             <architecture>i386:x86-64</architecture>\n",
        );
        for (f, fname) in FEATURES.iter().enumerate() {
            let _ = writeln!(x, "<feature name=\"{fname}\">");
            if f == 1 {
                for (id, ty, n) in [
                    ("v4f", "ieee_single", 4),
                    ("v2d", "ieee_double", 2),
                    ("v16i8", "int8", 16),
                    ("v8i16", "int16", 8),
                    ("v4i32", "int32", 4),
                    ("v2i64", "int64", 2),
                ] {
                    let _ = writeln!(x, "<vector id=\"{id}\" type=\"{ty}\" count=\"{n}\"/>");
                }
                x.push_str(
                    "<union id=\"vec128\"><field name=\"v4_float\" type=\"v4f\"/><field name=\"v2_double\" \
                     type=\"v2d\"/><field name=\"v16_int8\" type=\"v16i8\"/><field name=\"v8_int16\" \
                     type=\"v8i16\"/><field name=\"v4_int32\" type=\"v4i32\"/><field name=\"v2_int64\" \
                     type=\"v2i64\"/><field name=\"uint128\" type=\"uint128\"/></union>\n",
                );
            }
            for (n, r) in regs().iter().enumerate() {
                if r.feature == f {
                    let group = match r.r {
                        R::St(_)
                        | R::Fctrl
                        | R::Fstat
                        | R::Ftag
                        | R::Fiseg
                        | R::Fioff
                        | R::Foseg
                        | R::Fooff
                        | R::Fop => " group=\"float\"",
                        R::Xmm(_) | R::Mxcsr => " group=\"vector\"",
                        _ if f >= 2 => " group=\"system\"",
                        _ => "",
                    };
                    let _ = writeln!(
                        x,
                        "<reg name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{n}\"{group}/>",
                        r.name,
                        r.bytes * 8,
                        r.ty
                    );
                }
            }
            x.push_str("</feature>\n");
        }
        x.push_str("</target>\n");
        x
    })
}

/// The register file as gdb exchanges it: one value per register of the description, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    vals: Vec<u128>,
}

impl Regs {
    fn index(r: R) -> usize {
        regs().iter().position(|d| d.r == r).unwrap_or(0)
    }

    /// The value of the register named `name`, if the description has it.
    pub fn get(&self, name: &str) -> Option<u128> {
        let i = regs().iter().position(|d| d.name == name)?;
        self.vals.get(i).copied()
    }

    /// The registers of `st`.
    pub fn from_cpu(st: &CpuState) -> Regs {
        let top = ((st.fpu.fsw >> 11) & 7) as usize;
        let vals = regs()
            .iter()
            .map(|d| match d.r {
                R::Gpr(i) => st.gpr[i] as u128,
                R::Rip => st.rip as u128,
                R::Eflags => st.rflags as u32 as u128,
                R::Sel(s) => st.sreg(s).selector as u128,
                R::Base(s) => st.sreg(s).base as u128,
                R::St(i) => st.fpu.st[(top + i) & 7] & ((1u128 << 80) - 1),
                R::Fctrl => st.fpu.fcw as u128,
                R::Fstat => st.fpu.fsw as u128,
                R::Ftag => st.fpu.ftw as u128,
                R::Fiseg => st.fpu.fcs as u128,
                R::Fioff => st.fpu.fip as u32 as u128,
                R::Foseg => st.fpu.fds as u128,
                R::Fooff => st.fpu.fdp as u32 as u128,
                R::Fop => st.fpu.fop as u128,
                R::Xmm(i) => st.fpu.xmm[i],
                R::Mxcsr => st.fpu.mxcsr as u128,
                R::Cr(0) => st.cr0 as u128,
                R::Cr(2) => st.cr2 as u128,
                R::Cr(3) => st.cr3 as u128,
                R::Cr(4) => st.cr4 as u128,
                R::Cr(_) => st.cr8 as u128,
                R::Efer => st.efer as u128,
                R::GdtrBase => st.gdtr.base as u128,
                R::GdtrLimit => st.gdtr.limit as u128,
                R::IdtrBase => st.idtr.base as u128,
                R::IdtrLimit => st.idtr.limit as u128,
                R::Ldtr => st.ldtr.selector as u128,
                R::Tr => st.tr.selector as u128,
                R::Dr(i) => st.dr[i] as u128,
                R::Msr(i) => *msr_ref(&mut st.clone(), i) as u128,
                R::Icount => st.icount as u128,
            })
            .collect();
        Regs { vals }
    }

    /// Stores into `st` the registers that differ from `st`'s own (so an unchanged register, such as
    /// a selector, is not rewritten). Returns whether a system register (control, segment base,
    /// descriptor table, MSR, debug) changed: the caller then drops the engine's caches.
    pub fn apply(&self, st: &mut CpuState) -> bool {
        let cur = Regs::from_cpu(st);
        let top = ((st.fpu.fsw >> 11) & 7) as usize;
        let mut system = false;
        for (i, d) in regs().iter().enumerate() {
            let Some(&v) = self.vals.get(i) else { break };
            if cur.vals.get(i) == Some(&v) {
                continue;
            }
            let q = v as u64;
            match d.r {
                R::Gpr(i) => st.gpr[i] = q,
                R::Rip => st.rip = q,
                // Bit 1 is always set; the others are as written.
                R::Eflags => st.rflags = (q & 0x3f_7fd5) | cpu::state::flags::FIXED1,
                R::Sel(s) => st.sreg_mut(s).selector = q as u16,
                R::Base(s) => {
                    st.sreg_mut(s).base = q;
                    system = true;
                }
                R::St(i) => st.fpu.st[(top + i) & 7] = v & ((1u128 << 80) - 1),
                R::Fctrl => st.fpu.fcw = q as u16,
                R::Fstat => st.fpu.fsw = q as u16,
                R::Ftag => st.fpu.ftw = q as u16,
                R::Fiseg => st.fpu.fcs = q as u16,
                R::Fioff => st.fpu.fip = q as u32 as u64,
                R::Foseg => st.fpu.fds = q as u16,
                R::Fooff => st.fpu.fdp = q as u32 as u64,
                R::Fop => st.fpu.fop = q as u16 & 0x7ff,
                R::Xmm(i) => st.fpu.xmm[i] = v,
                R::Mxcsr => st.fpu.mxcsr = q as u32,
                R::Icount => {} // read-only: time is the instruction count
                r => {
                    system = true;
                    match r {
                        R::Cr(0) => st.cr0 = q,
                        R::Cr(2) => st.cr2 = q,
                        R::Cr(3) => st.cr3 = q,
                        R::Cr(4) => st.cr4 = q,
                        R::Cr(_) => st.cr8 = q & 0xf,
                        R::Efer => st.efer = q,
                        R::GdtrBase => st.gdtr.base = q,
                        R::GdtrLimit => st.gdtr.limit = q as u32,
                        R::IdtrBase => st.idtr.base = q,
                        R::IdtrLimit => st.idtr.limit = q as u32,
                        R::Ldtr => st.ldtr.selector = q as u16,
                        R::Tr => st.tr.selector = q as u16,
                        R::Dr(i) => st.dr[i] = q,
                        R::Msr(i) => *msr_ref(st, i) = q,
                        _ => {}
                    }
                }
            }
        }
        system
    }
}

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.vals.get(Regs::index(R::Rip)).copied().unwrap_or(0) as u64
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for (d, v) in regs().iter().zip(self.vals.iter()) {
            for b in &v.to_le_bytes()[..d.bytes] {
                write_byte(Some(*b));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let total: usize = regs().iter().map(|d| d.bytes).sum();
        if bytes.len() > total {
            return Err(());
        }
        self.vals.resize(regs().len(), 0);
        let mut off = 0;
        for (d, v) in regs().iter().zip(self.vals.iter_mut()) {
            // gdb may send fewer registers than described: the rest keep their values.
            if off + d.bytes > bytes.len() {
                break;
            }
            let mut b = [0u8; 16];
            b[..d.bytes].copy_from_slice(&bytes[off..off + d.bytes]);
            *v = u128::from_le_bytes(b);
            off += d.bytes;
        }
        Ok(())
    }
}

/// The x86-64 machine as gdb sees it (with Ferrite's target description).
pub enum FerriteX86 {}

impl Arch for FerriteX86 {
    type Usize = u64;
    type Registers = Regs;
    type BreakpointKind = usize;
    type RegId = ();

    fn target_description_xml() -> Option<&'static str> {
        Some(target_xml())
    }
}

// ---------------------------------------------------------------------------------------------
// The target.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
    ReverseStep,
    ReverseCont,
}

type StopReason = SingleThreadStopReason<u64>;

/// The machine under a debugger: what the stub needs between packets.
pub struct GdbTarget<'a> {
    m: &'a mut Machine,
    /// Reverse execution's history (`None` under KVM, whose runs are not deterministic).
    hist: Option<&'a mut History>,
    monitor: &'a mut Option<monitor::MonitorServer>,
    action: Action,
    /// Set by a resume: a continue from a breakpoint address first steps over it.
    fresh: bool,
    sw: BTreeSet<u64>,
    hw: BTreeSet<u64>,
    watches: Vec<HostWatch>,
    /// Absolute instruction limit (`--max-instructions`).
    max: u64,
    /// How the run ended, when it did (the guest exited, the user quit).
    outcome: Option<RunOutcome>,
    /// `monitor break-icount N`: a continue stops when the retired count reaches N.
    icount_stop: Option<u64>,
    /// Under `--accel kvm`: what the host's KVM gives a debugger (`None` under interp and jit).
    kvm: Option<KvmDebug>,
}

/// The debugger under KVM: breakpoints and watchpoints in DR0-DR3, stepping with
/// `KVM_GUESTDBG_SINGLESTEP` (`crate::kvm::debug`).
struct KvmDebug {
    /// Whether the host's hardware breakpoints work (`Err`: why not, from the probe).
    hw: Result<(), String>,
    /// Whether the host's data breakpoints work (`Err`: why not, from the probe).
    watch: Result<(), String>,
    /// What the running resume is.
    mode: KvmMode,
    /// Whose each slot of the request last given to the engine is.
    owners: Vec<SlotOwner>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvmMode {
    /// `continue`: breakpoints and watchpoints armed.
    Cont,
    /// `stepi`: one instruction (watchpoints armed, breakpoints not).
    Step,
    /// A continue from a breakpoint's address: its instruction first, as a step, then on.
    StepOver,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotOwner {
    Break(u64),
    Watch(HostWatch),
}

impl<'a> GdbTarget<'a> {
    /// Runs forward to `limit` (through the history when there is one).
    fn forward(&mut self, limit: u64) -> RunOutcome {
        match self.hist.as_deref_mut() {
            Some(h) => h.run_forward(self.m, limit),
            None => self.m.run(Some(limit)),
        }
    }

    /// The slots the breakpoints and watchpoints take under KVM.
    fn kvm_slots_used(&self) -> usize {
        let breaks = self.sw.union(&self.hw).count();
        let watches: usize = self
            .watches
            .iter()
            .map(|w| crate::kvm::data_pieces(w.addr, w.len, crate::kvm::HW_SLOTS).map_or(0, |p| p.len()))
            .sum();
        breaks + watches
    }

    /// Under KVM: whether `more` slots are free (`Err`: why not, for gdb's refusal and the log).
    fn kvm_room(&self, more: usize) -> Result<(), String> {
        let Some(k) = &self.kvm else { return Ok(()) };
        if let Err(why) = &k.hw {
            return Err(format!("hardware breakpoints do not work on this host's KVM ({why})"));
        }
        let used = self.kvm_slots_used();
        if used + more > crate::kvm::HW_SLOTS {
            return Err(format!(
                "under --accel kvm breakpoints and watchpoints share the {} debug registers DR0-DR3 \
                 ({used} in use, {more} more asked for)",
                crate::kvm::HW_SLOTS
            ));
        }
        Ok(())
    }

    /// Gives the KVM engine the request for the current mode: single-step while stepping (without
    /// the breakpoints, so that the one at RIP does not stop the step), the breakpoints while
    /// continuing, the watchpoints always.
    fn kvm_program(&mut self) {
        let Some(k) = self.kvm.as_mut() else { return };
        let stepping = k.mode != KvmMode::Cont;
        let mut owners = Vec::new();
        if !stepping {
            owners.extend(self.sw.union(&self.hw).map(|a| SlotOwner::Break(*a)));
        }
        owners.extend(self.watches.iter().map(|w| SlotOwner::Watch(*w)));
        let mut req = crate::kvm::GuestDebugRequest { single_step: stepping, slots: Vec::new() };
        let mut slot_owners = Vec::new();
        for o in owners {
            match o {
                SlotOwner::Break(a) => {
                    req.slots.push(crate::kvm::HwSlot::Exec(a));
                    slot_owners.push(o);
                }
                SlotOwner::Watch(w) => {
                    for (addr, len) in
                        crate::kvm::data_pieces(w.addr, w.len, crate::kvm::HW_SLOTS).unwrap_or_default()
                    {
                        req.slots.push(crate::kvm::HwSlot::Data { addr, len, write_only: !w.read });
                        slot_owners.push(o);
                    }
                }
            }
        }
        // Refused additions keep this within the four slots; should it not be, the extra slots go.
        req.slots.truncate(crate::kvm::HW_SLOTS);
        slot_owners.truncate(crate::kvm::HW_SLOTS);
        k.owners = slot_owners;
        if let Some(e) = self.m.kvm_mut()
            && let Err(why) = e.set_guest_debug(req)
        {
            eprintln!("ferrite: gdb: {why}");
        }
    }

    /// One slice of a continue or a step under KVM (`None`: nothing to report yet).
    fn kvm_slice(&mut self) -> Option<StopReason> {
        let rip = self.m.cpu.rip;
        let at_break = self.sw.contains(&rip) || self.hw.contains(&rip);
        let k = self.kvm.as_mut()?;
        if self.fresh {
            self.fresh = false;
            if k.mode == KvmMode::Cont && at_break {
                k.mode = KvmMode::StepOver;
            }
        }
        self.kvm_program();
        let mut limit = self.m.cpu.icount.saturating_add(SLICE).min(self.max);
        if let Some(n) = self.icount_stop.filter(|n| *n > self.m.cpu.icount) {
            limit = limit.min(n);
        }
        let out = self.m.run(Some(limit));
        let hit = self.m.kvm_mut().and_then(|e| e.take_debug_hit());
        if out == RunOutcome::InstructionLimit && self.icount_stop.is_some_and(|n| self.m.cpu.icount >= n) {
            self.icount_stop = None;
            return Some(StopReason::Signal(Signal::SIGTRAP));
        }
        if out != RunOutcome::DebugStop {
            return self.reason(out, false);
        }
        let k = self.kvm.as_mut()?;
        let Some(hit) = hit else { return Some(StopReason::Signal(Signal::SIGTRAP)) };
        let owner = |i: usize| k.owners.get(i).copied();
        let hits: Vec<SlotOwner> =
            (0..crate::kvm::HW_SLOTS).filter(|i| hit.slots & (1 << i) != 0).filter_map(owner).collect();
        let mode = std::mem::replace(&mut k.mode, KvmMode::Cont);
        if let Some(SlotOwner::Watch(w)) = hits.iter().find(|o| matches!(o, SlotOwner::Watch(_))) {
            return Some(watch_reason(cpu::debug::HostHit { watch: *w, write: w.write }));
        }
        if hit.step {
            return match mode {
                // Over the breakpoint: on with the continue.
                KvmMode::StepOver => None,
                _ => Some(StopReason::DoneStep),
            };
        }
        if let Some(SlotOwner::Break(a)) = hits.first() {
            return Some(if self.sw.contains(a) { StopReason::SwBreak(()) } else { StopReason::HwBreak(()) });
        }
        // A stop of the mode before (a step the host reported without DR6.BS).
        k.mode = mode;
        Some(StopReason::Signal(Signal::SIGTRAP))
    }

    fn sync_stops(&mut self) {
        if self.kvm.is_some() {
            self.kvm_program();
            return;
        }
        let stops: BTreeSet<u64> = self.sw.union(&self.hw).copied().collect();
        let watches = self.watches.clone();
        if let Some(i) = self.m.interp_mut() {
            i.stops = stops;
            // The watched pages may be in the TLB: drop them so that every access is checked.
            flush_watched(i, &watches);
            i.mmu.debug.set_host_watches(watches);
        }
    }

    fn take_hit(&mut self) -> Option<cpu::debug::HostHit> {
        self.m.interp_mut().and_then(|i| i.mmu.debug.host_hit.take())
    }

    /// Turns a run's outcome into a stop reason (`None`: keep running).
    fn reason(&mut self, out: RunOutcome, stepping: bool) -> Option<StopReason> {
        match out {
            RunOutcome::InstructionLimit => {
                if let Some(h) = self.take_hit() {
                    return Some(watch_reason(h));
                }
                if self.m.cpu.icount >= self.max {
                    self.outcome = Some(RunOutcome::InstructionLimit);
                    return Some(StopReason::Exited(124));
                }
                stepping.then_some(StopReason::DoneStep)
            }
            RunOutcome::DebugStop => {
                if let Some(h) = self.take_hit() {
                    return Some(watch_reason(h));
                }
                let rip = self.m.cpu.rip;
                Some(if self.sw.contains(&rip) {
                    StopReason::SwBreak(())
                } else if self.hw.contains(&rip) {
                    StopReason::HwBreak(())
                } else {
                    StopReason::Signal(Signal::SIGTRAP)
                })
            }
            RunOutcome::Exited(c) => {
                self.outcome = Some(out);
                Some(StopReason::Exited(c as u8))
            }
            RunOutcome::Quit => {
                self.outcome = Some(out);
                Some(StopReason::Terminated(Signal::SIGKILL))
            }
            RunOutcome::Stopped { reason, .. } => {
                eprintln!("ferrite: the machine stopped: {reason}");
                Some(StopReason::Signal(Signal::SIGSEGV))
            }
        }
    }

    /// One instruction, breakpoints aside.
    fn step_one(&mut self) -> StopReason {
        let stops = self.m.interp_mut().map(|i| std::mem::take(&mut i.stops));
        let target = self.m.cpu.icount + 1;
        let out = self.forward(target);
        if let (Some(i), Some(s)) = (self.m.interp_mut(), stops) {
            i.stops = s;
        }
        self.reason(out, true).unwrap_or(StopReason::DoneStep)
    }

    /// Runs one slice of a continue (`None`: the slice ended with nothing to report).
    fn run_slice(&mut self) -> Option<StopReason> {
        if self.fresh {
            self.fresh = false;
            if self.m.interp().is_some_and(|i| i.stops.contains(&self.m.cpu.rip)) {
                // Continuing from a breakpoint: its instruction runs first.
                match self.step_one() {
                    StopReason::DoneStep => {}
                    r => return Some(r),
                }
            }
        }
        if let Some(h) = self.hist.as_deref_mut() {
            h.maybe_checkpoint(self.m);
        }
        let mut limit = self.m.cpu.icount.saturating_add(SLICE).min(self.max);
        if let Some(n) = self.icount_stop.filter(|n| *n > self.m.cpu.icount) {
            limit = limit.min(n);
        }
        let out = self.forward(limit);
        if out == RunOutcome::InstructionLimit && self.icount_stop == Some(self.m.cpu.icount) {
            self.icount_stop = None;
            if let Some(h) = self.take_hit() {
                return Some(watch_reason(h));
            }
            return Some(StopReason::Signal(Signal::SIGTRAP));
        }
        self.reason(out, false)
    }

    fn reverse_step_one(&mut self) -> StopReason {
        let Some(hist) = self.hist.take() else { return StopReason::Signal(Signal::SIGTRAP) };
        let r = self.reverse_step_in(hist);
        self.hist = Some(hist);
        r
    }

    fn reverse_step_in(&mut self, hist: &mut History) -> StopReason {
        let c = self.m.cpu.icount;
        if c <= hist.earliest() {
            return StopReason::ReplayLog { tid: None, pos: ReplayLogPosition::Begin };
        }
        match hist.goto(self.m, c - 1) {
            Ok(n) if n == c - 1 => StopReason::DoneStep,
            Ok(_) => StopReason::ReplayLog { tid: None, pos: ReplayLogPosition::Begin },
            Err(e) => {
                eprintln!("ferrite: gdb: reverse step: {e}");
                StopReason::Signal(Signal::SIGTRAP)
            }
        }
    }

    /// Back to the last breakpoint or watchpoint hit before the current instruction count: each
    /// interval between checkpoints, latest first, is re-executed with breakpoints active and its
    /// last hit taken.
    fn reverse_continue(&mut self) -> StopReason {
        let Some(hist) = self.hist.take() else { return StopReason::Signal(Signal::SIGTRAP) };
        let r = self.reverse_continue_in(hist);
        self.hist = Some(hist);
        r
    }

    fn reverse_continue_in(&mut self, hist: &mut History) -> StopReason {
        let c = self.m.cpu.icount;
        let mut upper = c;
        for ck in hist.checkpoints_before(c) {
            if ck >= upper && ck != c {
                continue;
            }
            if let Err(e) = hist.restore_before(self.m, ck) {
                eprintln!("ferrite: gdb: reverse continue: {e}");
                return StopReason::Signal(Signal::SIGTRAP);
            }
            let mut last: Option<(u64, StopReason)> = None;
            loop {
                let out = hist.run_forward(self.m, upper);
                let at = self.m.cpu.icount;
                match out {
                    RunOutcome::DebugStop => {
                        // Going backwards, a watchpoint stops at the accessing instruction, before it
                        // runs (gdb then sees the value change backwards); a breakpoint where it is.
                        match self.reason(RunOutcome::DebugStop, false) {
                            Some(r @ StopReason::Watch { .. }) if at <= c && at > 0 => {
                                last = Some((at - 1, r))
                            }
                            Some(r) if at < c => last = Some((at, r)),
                            _ => {}
                        }
                        if at >= upper {
                            break;
                        }
                        if self.m.interp().is_some_and(|i| i.stops.contains(&self.m.cpu.rip)) {
                            let stops = self.m.interp_mut().map(|i| std::mem::take(&mut i.stops));
                            let out = hist.run_forward(self.m, at + 1);
                            if let (Some(i), Some(s)) = (self.m.interp_mut(), stops) {
                                i.stops = s;
                            }
                            // A watchpoint met by the breakpoint's own instruction.
                            if let Some(h) = self.take_hit()
                                && at < c
                            {
                                last = Some((at, watch_reason(h)));
                            }
                            if !matches!(out, RunOutcome::InstructionLimit | RunOutcome::DebugStop) {
                                break;
                            }
                        }
                    }
                    _ => break,
                }
            }
            if let Some((h, r)) = last {
                return match hist.goto(self.m, h) {
                    Ok(_) => r,
                    Err(e) => {
                        eprintln!("ferrite: gdb: reverse continue: {e}");
                        StopReason::Signal(Signal::SIGTRAP)
                    }
                };
            }
            upper = ck;
        }
        let first = hist.earliest();
        if let Err(e) = hist.goto(self.m, first) {
            eprintln!("ferrite: gdb: reverse continue: {e}");
        }
        StopReason::ReplayLog { tid: None, pos: ReplayLogPosition::Begin }
    }
}

/// Drops the TLB entries of the pages `watches` cover.
pub(crate) fn flush_watched(i: &mut cpu::Interpreter, watches: &[HostWatch]) {
    for w in watches {
        // At most 1 MiB each (add_hw_watchpoint), so at most 257 pages; addresses wrap.
        let pages = ((w.addr & 0xfff) + w.len.min(1 << 20)).div_ceil(0x1000);
        for k in 0..pages {
            i.mmu.tlb.flush_page((w.addr & !0xfff).wrapping_add(k << 12));
        }
    }
}

fn watch_reason(h: cpu::debug::HostHit) -> StopReason {
    let kind = match (h.watch.read, h.watch.write) {
        (true, true) => WatchKind::ReadWrite,
        (true, false) => WatchKind::Read,
        _ => WatchKind::Write,
    };
    StopReason::Watch { tid: (), kind, addr: h.watch.addr }
}

impl Target for GdbTarget<'_> {
    type Arch = FerriteX86;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, FerriteX86, String> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl SingleThreadBase for GdbTarget<'_> {
    fn read_registers(&mut self, regs: &mut Regs) -> TargetResult<(), Self> {
        *regs = Regs::from_cpu(&self.m.cpu);
        Ok(())
    }

    fn write_registers(&mut self, regs: &Regs) -> TargetResult<(), Self> {
        if regs.apply(&mut self.m.cpu) {
            self.m.engine.flush_all();
        }
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let n = read_virt(self.m, start, data);
        if n == 0 && !data.is_empty() {
            return Err(TargetError::NonFatal);
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        if write_virt(self.m, start, data) != data.len() {
            return Err(TargetError::NonFatal);
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for GdbTarget<'_> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), String> {
        self.action = Action::Continue;
        self.fresh = true;
        if let Some(k) = self.kvm.as_mut() {
            k.mode = KvmMode::Cont;
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    // Without a history (under KVM) gdb is told reverse execution is not supported, and says so.
    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, (), Self>> {
        self.hist.as_ref()?;
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, (), Self>> {
        self.hist.as_ref()?;
        Some(self)
    }
}

impl SingleThreadSingleStep for GdbTarget<'_> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), String> {
        self.action = Action::Step;
        self.fresh = false;
        if let Some(k) = self.kvm.as_mut() {
            k.mode = KvmMode::Step;
        }
        Ok(())
    }
}

impl ReverseStep<()> for GdbTarget<'_> {
    fn reverse_step(&mut self, _tid: ()) -> Result<(), String> {
        self.action = Action::ReverseStep;
        Ok(())
    }
}

impl ReverseCont<()> for GdbTarget<'_> {
    fn reverse_cont(&mut self) -> Result<(), String> {
        self.action = Action::ReverseCont;
        Ok(())
    }
}

impl Breakpoints for GdbTarget<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl GdbTarget<'_> {
    /// A breakpoint at `addr` fits under [`MAX_BREAKPOINTS`]; past it the connection is closed (a
    /// fatal target error, logged by the session) and the guest runs on.
    /// Under KVM, whether a breakpoint at `addr` gets a debug register (a refusal is logged; gdb shows
    /// its own `Cannot insert breakpoint`).
    fn kvm_break_fits(&self, addr: u64) -> bool {
        if self.kvm.is_none() || self.sw.contains(&addr) || self.hw.contains(&addr) {
            return true;
        }
        match self.kvm_room(1) {
            Ok(()) => true,
            Err(why) => {
                eprintln!("ferrite: gdb: breakpoint at {addr:#x} refused: {why}");
                false
            }
        }
    }

    fn room_for(&self, addr: u64) -> Result<(), TargetError<String>> {
        let known = self.sw.contains(&addr) || self.hw.contains(&addr);
        if !known && self.sw.len() + self.hw.len() >= MAX_BREAKPOINTS {
            return Err(TargetError::Fatal(format!("more than {MAX_BREAKPOINTS} breakpoints")));
        }
        Ok(())
    }
}

impl SwBreakpoint for GdbTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.room_for(addr)?;
        if !self.kvm_break_fits(addr) {
            return Ok(false);
        }
        self.sw.insert(addr);
        self.sync_stops();
        Ok(true)
    }
    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let had = self.sw.remove(&addr);
        self.sync_stops();
        Ok(had)
    }
}

impl HwBreakpoint for GdbTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.room_for(addr)?;
        if !self.kvm_break_fits(addr) {
            return Ok(false);
        }
        self.hw.insert(addr);
        self.sync_stops();
        Ok(true)
    }
    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let had = self.hw.remove(&addr);
        self.sync_stops();
        Ok(had)
    }
}

/// Most watchpoints at once (the pages they watch bypass the TLB).
const MAX_WATCHES: usize = 64;

impl HwWatchpoint for GdbTarget<'_> {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        if len == 0 || len > 1 << 20 || self.watches.len() >= MAX_WATCHES {
            return Ok(false);
        }
        if self.kvm.is_some() {
            let works = self.kvm.as_ref().map_or(Ok(()), |k| k.watch.clone());
            let room = match crate::kvm::data_pieces(addr, len, crate::kvm::HW_SLOTS) {
                Some(_) if works.is_err() => {
                    works.map_err(|why| format!("data breakpoints do not work on this host's KVM ({why})"))
                }
                Some(p) => self.kvm_room(p.len()),
                None => Err(format!(
                    "{len} bytes at {addr:#x} need more than the {} debug registers",
                    crate::kvm::HW_SLOTS
                )),
            };
            if let Err(why) = room {
                eprintln!("ferrite: gdb: watchpoint at {addr:#x} refused: {why}");
                return Ok(false);
            }
        }
        let (read, write) = match kind {
            WatchKind::Write => (false, true),
            WatchKind::Read => (true, false),
            WatchKind::ReadWrite => (true, true),
        };
        self.watches.push(HostWatch { addr, len, read, write });
        self.sync_stops();
        Ok(true)
    }
    fn remove_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        let (read, write) = match kind {
            WatchKind::Write => (false, true),
            WatchKind::Read => (true, false),
            WatchKind::ReadWrite => (true, true),
        };
        let w = HostWatch { addr, len, read, write };
        let Some(i) = self.watches.iter().position(|x| *x == w) else { return Ok(false) };
        self.watches.remove(i);
        self.sync_stops();
        Ok(true)
    }
}

impl MonitorCmd for GdbTarget<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), String> {
        let line = String::from_utf8_lossy(cmd);
        if let Some(n) = line.trim().strip_prefix("break-icount") {
            let text = match monitor::number(n) {
                Some(n) if n > self.m.cpu.icount => {
                    self.icount_stop = Some(n);
                    format!("a continue stops at instruction {n}\n")
                }
                _ => format!("break-icount N: N after the current count ({})\n", self.m.cpu.icount),
            };
            out.write_raw(text.as_bytes());
            return Ok(());
        }
        let (text, ctl) = monitor::execute(self.m, self.hist.as_deref_mut(), &line);
        out.write_raw(text.as_bytes());
        match ctl {
            Control::Quit => {
                self.outcome = Some(RunOutcome::Quit);
                Err("quit from the monitor".into())
            }
            Control::Stop | Control::Cont => {
                out.write_raw(b"(under gdb: use gdb's continue and Ctrl-C)\n");
                Ok(())
            }
            Control::None => Ok(()),
        }
    }
}

struct EventLoop<'a>(std::marker::PhantomData<&'a ()>);

impl<'a> BlockingEventLoop for EventLoop<'a> {
    type Target = GdbTarget<'a>;
    type Connection = Box<dyn ConnectionExt<Error = io::Error>>;
    type StopReason = StopReason;

    fn wait_for_stop_reason(
        t: &mut GdbTarget<'a>,
        conn: &mut Self::Connection,
    ) -> Result<Event<StopReason>, WaitForStopReasonError<String, io::Error>> {
        match t.action {
            // Under KVM a step runs in slices like a continue (a halted guest may take a while).
            Action::Step if t.kvm.is_some() => {}
            Action::Step => return Ok(Event::TargetStopped(t.step_one())),
            Action::ReverseStep => return Ok(Event::TargetStopped(t.reverse_step_one())),
            Action::ReverseCont => return Ok(Event::TargetStopped(t.reverse_continue())),
            Action::Continue => {}
        }
        loop {
            if conn.peek().map(|b| b.is_some()).unwrap_or(true) {
                let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
            if let Some(mon) = t.monitor.as_mut() {
                match mon.poll(t.m, t.hist.as_deref_mut()) {
                    Control::Stop => return Ok(Event::TargetStopped(StopReason::Signal(Signal::SIGINT))),
                    Control::Quit => {
                        t.outcome = Some(RunOutcome::Quit);
                        return Ok(Event::TargetStopped(StopReason::Terminated(Signal::SIGKILL)));
                    }
                    Control::Cont | Control::None => {}
                }
            }
            let r = if t.kvm.is_some() { t.kvm_slice() } else { t.run_slice() };
            if let Some(r) = r {
                return Ok(Event::TargetStopped(r));
            }
        }
    }

    fn on_interrupt(_t: &mut GdbTarget<'a>) -> Result<Option<StopReason>, String> {
        Ok(Some(StopReason::Signal(Signal::SIGINT)))
    }
}

// ---------------------------------------------------------------------------------------------
// The debugging run loop.

/// How to run a machine under the debugger and monitor.
pub struct DebugOptions {
    /// Where the GDB stub listens.
    pub gdb: Option<Endpoint>,
    /// Hold the guest until a debugger connects (QEMU's `-S`).
    pub wait: bool,
    /// Where the monitor listens.
    pub monitor: Option<Endpoint>,
    /// Set while guest output must not be shown (re-execution for reverse debugging).
    pub mute: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Stop after this many retired instructions in all (`--max-instructions`).
    pub max_instructions: Option<u64>,
    /// Instructions between reverse-execution checkpoints.
    pub checkpoint_interval: u64,
}

impl Default for DebugOptions {
    fn default() -> Self {
        DebugOptions {
            gdb: None,
            wait: false,
            monitor: None,
            mute: None,
            max_instructions: None,
            checkpoint_interval: crate::reverse::DEFAULT_INTERVAL,
        }
    }
}

/// Runs `m` with the GDB stub and/or the monitor listening, until the guest exits, the machine stops
/// (with no debugger attached), or a debugger or the monitor ends the run.
pub fn run(m: &mut Machine, opts: DebugOptions) -> Result<RunOutcome, String> {
    // Under KVM: what the host gives a debugger, found out once (a throwaway VM, milliseconds).
    let kvm_hw = if m.kvm_mut().is_some() {
        let found =
            crate::kvm::probe_guest_debug().map_err(|e| format!("the GDB stub under --accel kvm: {e}"))?;
        if opts.gdb.is_some() && found.single_step != crate::kvm::GuestDebug::Works {
            return Err(format!(
                "the GDB stub under --accel kvm needs KVM_GUESTDBG_SINGLESTEP, which this host's KVM does not \
                 give ({:?}); use --accel jit",
                found.single_step
            ));
        }
        let works = |d: crate::kvm::GuestDebug| match d {
            crate::kvm::GuestDebug::Works => Ok(()),
            other => Err(format!("{other:?}")),
        };
        let hw = works(found.hw_breakpoint);
        // A data breakpoint needs the hardware breakpoints too.
        let watch = hw.clone().and(works(found.hw_watchpoint));
        if opts.gdb.is_some() {
            eprintln!(
                "ferrite: gdb under kvm: single-step; breakpoints: {}; watchpoints: {}; no reverse execution \
                 (it needs --accel interp or jit)",
                if hw.is_ok() { "4 in DR0-DR3" } else { "none (the host's KVM ignores DR0-DR3)" },
                match &watch {
                    Ok(()) => "in DR0-DR3, shared with the breakpoints",
                    Err(_) => "none (the host's KVM ignores data breakpoints)",
                }
            );
        }
        Some((hw, watch))
    } else if m.interp().is_none() {
        return Err("the GDB stub and the monitor need --accel interp, jit or kvm".into());
    } else {
        None
    };
    // The first checkpoint (a copy of RAM) is taken before anyone can connect, so that no debugger
    // waits on it. None under KVM: its runs do not repeat (host time), so there is nothing to go
    // back through.
    let mut hist = kvm_hw.is_none().then(|| {
        let mut h = History::attach(m, opts.mute.clone());
        h.interval = opts.checkpoint_interval.max(1);
        h
    });
    let gdb = opts.gdb.as_ref().map(Listener::bind).transpose()?;
    let mut mon = opts.monitor.as_ref().map(monitor::MonitorServer::bind).transpose()?;
    if let Some(ep) = &opts.gdb {
        eprintln!("ferrite: gdb stub listening on {ep}{}", if opts.wait { " (waiting for gdb)" } else { "" });
    }
    let max = opts.max_instructions.unwrap_or(u64::MAX);
    let mut paused = opts.wait && gdb.is_some();
    loop {
        if let Some(conn) = gdb.as_ref().and_then(Listener::accept) {
            paused = false;
            if let Some(out) = session(m, hist.as_mut(), kvm_hw.clone(), &mut mon, conn, max) {
                return Ok(out);
            }
        }
        if let Some(s) = mon.as_mut() {
            match s.poll(m, hist.as_mut()) {
                Control::Stop => paused = true,
                Control::Cont => paused = false,
                Control::Quit => return Ok(RunOutcome::Quit),
                Control::None => {}
            }
        }
        if paused {
            std::thread::sleep(POLL);
            continue;
        }
        // No checkpoints while no debugger is attached (the input log is kept: going back past this
        // stretch re-executes it from the checkpoint before).
        let limit = m.cpu.icount.saturating_add(SLICE).min(max);
        let out = match hist.as_mut() {
            Some(h) => h.run_forward(m, limit),
            None => m.run(Some(limit)),
        };
        match out {
            RunOutcome::InstructionLimit if m.cpu.icount < max => {}
            RunOutcome::DebugStop => {
                // Left over from a session that ended: nobody to report to.
                if let Some(i) = m.interp_mut() {
                    i.mmu.debug.host_hit = None;
                }
                if let Some(k) = m.kvm_mut() {
                    k.take_debug_hit();
                }
            }
            out => return Ok(out),
        }
    }
}

/// One debugger connection. Returns how the run ended, or `None` when the debugger went away and the
/// guest runs on.
fn session(
    m: &mut Machine,
    hist: Option<&mut History>,
    kvm_hw: Option<(Result<(), String>, Result<(), String>)>,
    mon: &mut Option<monitor::MonitorServer>,
    conn: Stream,
    max: u64,
) -> Option<RunOutcome> {
    eprintln!("ferrite: gdb connected");
    let mut t = GdbTarget {
        m,
        hist,
        monitor: mon,
        action: Action::Continue,
        fresh: false,
        sw: BTreeSet::new(),
        hw: BTreeSet::new(),
        watches: Vec::new(),
        max,
        outcome: None,
        icount_stop: None,
        kvm: kvm_hw.map(|(hw, watch)| KvmDebug { hw, watch, mode: KvmMode::Cont, owners: Vec::new() }),
    };
    let stub =
        match GdbStub::<GdbTarget<'_>, _>::builder(conn.into_conn()).packet_buffer_size(MAX_PACKET).build() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ferrite: gdb: {e}");
                return None;
            }
        };
    let r = stub.run_blocking::<EventLoop<'_>>(&mut t);
    // Whatever happened, the stub's breakpoints and watchpoints go with the connection.
    t.sw.clear();
    t.hw.clear();
    t.watches.clear();
    if let Some(k) = t.kvm.as_mut() {
        k.mode = KvmMode::Cont;
    }
    t.sync_stops();
    if let Some(i) = t.m.interp_mut() {
        i.mmu.debug.host_hit = None;
    }
    if let Some(k) = t.m.kvm_mut() {
        k.take_debug_hit();
    }
    let outcome = t.outcome.take();
    match r {
        Ok(DisconnectReason::Disconnect) => {
            eprintln!("ferrite: gdb detached; the guest runs on");
            outcome
        }
        Ok(DisconnectReason::Kill) => Some(outcome.unwrap_or(RunOutcome::Quit)),
        Ok(DisconnectReason::TargetExited(_)) | Ok(DisconnectReason::TargetTerminated(_)) => {
            Some(outcome.unwrap_or(RunOutcome::Quit))
        }
        Err(e) => {
            if outcome.is_some() {
                return outcome;
            }
            eprintln!("ferrite: gdb: closing the connection: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_default_to_loopback() {
        assert_eq!(Endpoint::parse("tcp::1234"), Ok(Endpoint::Tcp("127.0.0.1:1234".parse().unwrap())));
        assert_eq!(Endpoint::parse("1234"), Ok(Endpoint::Tcp("127.0.0.1:1234".parse().unwrap())));
        assert_eq!(Endpoint::parse("tcp:0.0.0.0:99"), Ok(Endpoint::Tcp("0.0.0.0:99".parse().unwrap())));
        assert_eq!(Endpoint::parse("tcp:[::1]:7"), Ok(Endpoint::Tcp("[::1]:7".parse().unwrap())));
        assert_eq!(Endpoint::parse("unix:/tmp/x"), Ok(Endpoint::Unix("/tmp/x".into())));
        for bad in ["", "tcp:", "tcp::x", "unix:", "udp::1", "tcp:host:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    fn feed_all(g: &mut PacketGuard, bytes: &[u8]) -> Result<(), String> {
        bytes.iter().try_for_each(|&b| g.feed(b))
    }

    #[test]
    fn the_packet_guard_refuses_what_would_hurt_and_passes_the_rest() {
        let mut g = PacketGuard::default();
        // Ordinary traffic, binary data with escapes (`}` 0x5d is 0x7d, `}` 0x03 is `#`), acks.
        for ok in [
            &b"+$qSupported:multiprocess+;xmlRegisters=i386#6a"[..],
            b"$m600,10#00",
            b"\x03$g#67+",
            b"$M600,2:abcd#00",
            b"$X600,3:}]}\x03a#00",
            b"$X600,0:#00",
            b"$mzz#00",
            b"$Z0,100,1#00",
        ] {
            assert_eq!(feed_all(&mut g, ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
        for (bad, why) in [
            (&b"$m0,ffffffffffffffff#00"[..], "asks for"),
            (b"$x0,100000#00", "asks for"),
            (b"$M600,100:00#00", "declares 256 bytes and carries 1"),
            (b"$M600,1:0#00", "odd number"),
            (b"$X600,4:}]a#00", "declares 4 bytes and carries 2"),
            (b"$X600,1:}#00", "ends in an escape"),
        ] {
            let mut g = PacketGuard::default();
            let e = feed_all(&mut g, bad).unwrap_err();
            assert!(e.contains(why), "{}: {e}", String::from_utf8_lossy(bad));
        }
        let mut g = PacketGuard::default();
        let mut huge = b"$X0,1:".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_PACKET + 10));
        let e = feed_all(&mut g, &huge).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        // The guard stops buffering at the limit.
        assert!(g.body.capacity() <= 2 * MAX_PACKET);
    }

    #[test]
    fn registers_round_trip_through_the_packet_form() {
        let mut st = CpuState::default();
        st.gpr[3] = 0x1122_3344_5566_7788; // rbx
        st.rip = 0xffff_8000_0000_1234;
        st.fpu.xmm[5] = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
        st.seg[Seg::Fs as usize].base = 0x7000;
        st.cr3 = 0x9000;
        st.icount = 77;
        let r = Regs::from_cpu(&st);
        assert_eq!(r.pc(), st.rip);
        assert_eq!(r.get("rbx"), Some(0x1122_3344_5566_7788));
        assert_eq!(r.get("fs_base"), Some(0x7000));
        assert_eq!(r.get("icount"), Some(77));
        let mut bytes = Vec::new();
        r.gdb_serialize(|b| bytes.push(b.unwrap()));
        assert_eq!(bytes.len(), regs().iter().map(|d| d.bytes).sum::<usize>());
        // rbx is gdb's second register.
        assert_eq!(&bytes[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        let mut back = Regs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        // A changed register is applied; icount is read-only; cr3 counts as a system change.
        let mut st2 = st.clone();
        let mut w = r.clone();
        let i = regs().iter().position(|d| d.name == "rax").unwrap();
        w.vals[i] = 5;
        let ic = regs().iter().position(|d| d.name == "icount").unwrap();
        w.vals[ic] = 1;
        assert!(!w.apply(&mut st2));
        assert_eq!(st2.gpr[0], 5);
        assert_eq!(st2.icount, 77);
        let c3 = regs().iter().position(|d| d.name == "cr3").unwrap();
        w.vals[c3] = 0xa000;
        assert!(w.apply(&mut st2));
        assert_eq!(st2.cr3, 0xa000);
        assert!(back.gdb_deserialize(&vec![0; bytes.len() + 1]).is_err());
    }

    #[test]
    fn the_target_description_names_every_register_once() {
        let x = target_xml();
        for d in regs() {
            assert_eq!(x.matches(&format!("name=\"{}\"", d.name)).count(), 1, "{}", d.name);
        }
        assert!(x.contains("i386:x86-64"));
    }
}
