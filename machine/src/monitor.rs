//! The monitor: a subset of QEMU's HMP, on a socket (`--monitor tcp::4444` or `unix:PATH`) and as gdb's
//! `monitor` commands.
//!
//! | command | does |
//! |---|---|
//! | `info registers` | the CPU's registers |
//! | `info history` | the reverse-execution checkpoints |
//! | `x /NFU ADDR` | N units (U: `b`, `h`, `w`, `g`) of memory at linear ADDR, format F (`x` hex, `d` decimal, `u` unsigned, `i` not supported) |
//! | `xp /NFU ADDR` | the same at a physical address |
//! | `savevm FILE` / `loadvm FILE` | the whole machine to / from a file |
//! | `stop` / `cont` | pause / resume the guest (on the socket, without gdb) |
//! | `quit` | end Ferrite |
//! | `break-icount N` | (gdb only) the next continue stops when the retired-instruction count reaches N |
//!
//! Memory is read as the debugger reads it ([`crate::gdb::read_virt`], [`crate::gdb::read_phys`]):
//! RAM and ROM only, no side effect on the page tables or the TLB.
//!
//! Snapshot files: [`save_snapshot_file`] / [`load_snapshot_file`] hold the whole-machine snapshot
//! ([`Machine::save_state`]) behind a small header; the record/replay work's file format replaces
//! these two functions when it lands.

use crate::Machine;
use crate::gdb::{Endpoint, Listener, Stream};
use crate::reverse::History;
use std::io::{Read, Write};
use std::net::SocketAddr;

/// What a command asks of the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Nothing.
    None,
    /// Pause the guest.
    Stop,
    /// Resume the guest.
    Cont,
    /// End Ferrite.
    Quit,
}

/// Header of a monitor snapshot file.
const FILE_MAGIC: &[u8; 16] = b"FERRITE-SAVEVM1\n";

/// Writes the whole machine to `path`.
pub fn save_snapshot_file(m: &Machine, path: &str) -> Result<usize, String> {
    let state = m.save_state();
    let mut out = Vec::with_capacity(state.len() + 16);
    out.extend_from_slice(FILE_MAGIC);
    out.extend_from_slice(&state);
    std::fs::write(path, &out).map_err(|e| format!("{path}: {e}"))?;
    Ok(out.len())
}

/// Restores the whole machine from `path` (written by [`save_snapshot_file`] for a machine of the same
/// configuration). On a bad file the machine is left as it was.
pub fn load_snapshot_file(m: &mut Machine, path: &str) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let Some(state) = data.strip_prefix(FILE_MAGIC.as_slice()) else {
        return Err(format!("{path}: not a Ferrite savevm file"));
    };
    let before = m.save_state();
    if let Err(e) = m.restore_state(state) {
        // Put the machine back as it was (the snapshot was checked while loading).
        let _ = m.restore_state(&before);
        return Err(format!("{path}: {e}"));
    }
    Ok(())
}

/// Parses a number as QEMU's monitor does: `0x` hex, else decimal (`$` names not supported).
pub fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `x`/`xp`: `/NFU ADDR`.
fn examine(m: &Machine, args: &str, physical: bool) -> String {
    let args = args.trim();
    let (fmt, addr) = match args.strip_prefix('/') {
        Some(rest) => match rest.split_once(char::is_whitespace) {
            Some((f, a)) => (f, a),
            None => return "usage: x /NFU ADDR\n".into(),
        },
        None => ("", args),
    };
    let Some(addr) = number(addr) else { return format!("bad address `{}`\n", addr.trim()) };
    let digits: String = fmt.chars().take_while(|c| c.is_ascii_digit()).collect();
    let count: u64 = if digits.is_empty() { 1 } else { digits.parse().unwrap_or(1) };
    let mut unit = 4usize;
    let mut format = 'x';
    for c in fmt[digits.len()..].chars() {
        match c {
            'b' => unit = 1,
            'h' => unit = 2,
            'w' => unit = 4,
            'g' => unit = 8,
            'x' | 'd' | 'u' => format = c,
            _ => return format!("unsupported format `{c}`\n"),
        }
    }
    let count = count.min(4096) as usize;
    let mut buf = vec![0u8; count * unit];
    let n = if physical {
        crate::gdb::read_phys(m, addr, &mut buf)
    } else {
        crate::gdb::read_virt(m, addr, &mut buf)
    };
    let mut out = String::new();
    let per_line = (16 / unit).max(1);
    for i in 0..count {
        let off = i * unit;
        if i % per_line == 0 {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("{:016x}:", addr.wrapping_add(off as u64)));
        }
        if off + unit > n {
            out.push_str(&format!("\nCannot access memory at {:#x}", addr.wrapping_add(off as u64)));
            break;
        }
        let mut b = [0u8; 8];
        b[..unit].copy_from_slice(&buf[off..off + unit]);
        let v = u64::from_le_bytes(b);
        let s = match format {
            'x' => format!(" 0x{v:0w$x}", w = unit * 2),
            'u' => format!(" {v}"),
            _ => {
                let sh = 64 - unit as u32 * 8;
                format!(" {}", ((v << sh) as i64) >> sh)
            }
        };
        out.push_str(&s);
    }
    out.push('\n');
    out
}

/// Runs one monitor command line. Returns its output and what it asks of the run loop.
pub fn execute(m: &mut Machine, hist: Option<&mut History>, line: &str) -> (String, Control) {
    let line = line.trim();
    let (cmd, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let args = args.trim();
    match cmd {
        "" => (String::new(), Control::None),
        "info" => match args {
            "registers" | "r" => (m.cpu.dump() + "\n", Control::None),
            "history" => match hist {
                Some(h) => {
                    let (n, bytes) = h.usage();
                    (
                        format!(
                            "{n} checkpoints ({} MiB), earliest at {}, frontier {}, {} inputs logged, now at {}\n",
                            bytes >> 20,
                            h.earliest(),
                            h.frontier(),
                            h.inputs_logged(),
                            m.cpu.icount
                        ),
                        Control::None,
                    )
                }
                None => ("no history\n".into(), Control::None),
            },
            _ => ("info registers | info history\n".into(), Control::None),
        },
        "x" => (examine(m, args, false), Control::None),
        "xp" => (examine(m, args, true), Control::None),
        "savevm" if !args.is_empty() => match save_snapshot_file(m, args) {
            Ok(n) => (format!("saved {n} bytes to {args} at instruction {}\n", m.cpu.icount), Control::None),
            Err(e) => (format!("savevm: {e}\n"), Control::None),
        },
        "loadvm" if !args.is_empty() => match load_snapshot_file(m, args) {
            Ok(()) => {
                if let Some(h) = hist {
                    h.reset(m);
                }
                (format!("loaded {args}: at instruction {}\n", m.cpu.icount), Control::None)
            }
            Err(e) => (format!("loadvm: {e}\n"), Control::None),
        },
        "screendump" if !args.is_empty() => match m.screenshot_png() {
            None => ("screendump: no VGA (--bios, or --device vga)\n".into(), Control::None),
            Some(png) => match std::fs::write(args, png) {
                Ok(()) => (format!("screen saved to {args} at instruction {}\n", m.cpu.icount), Control::None),
                Err(e) => (format!("screendump: {args}: {e}\n"), Control::None),
            },
        },
        "stop" => ("stopped\n".into(), Control::Stop),
        "cont" | "c" => ("running\n".into(), Control::Cont),
        "quit" | "q" => (String::new(), Control::Quit),
        "help" | "?" => (
            "info registers | info history | x /NFU ADDR | xp /NFU ADDR | savevm FILE | loadvm FILE | screendump FILE.png | stop | cont | quit\n"
                .into(),
            Control::None,
        ),
        _ => (format!("unknown command: `{line}` (try `help`)\n"), Control::None),
    }
}

/// Longest command line the socket monitor takes; a longer one closes that connection.
const MAX_LINE: usize = 4096;

struct Client {
    s: Stream,
    buf: Vec<u8>,
}

/// The monitor on a socket: lines in, text out, polled by the run loop.
pub struct MonitorServer {
    listener: Listener,
    clients: Vec<Client>,
}

impl MonitorServer {
    /// Listens on `ep`.
    pub fn bind(ep: &Endpoint) -> Result<MonitorServer, String> {
        Ok(MonitorServer { listener: Listener::bind(ep)?, clients: Vec::new() })
    }

    /// The TCP address listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections and runs the complete command lines waiting (never blocks).
    pub fn poll(&mut self, m: &mut Machine, mut hist: Option<&mut History>) -> Control {
        while let Some(s) = self.listener.accept() {
            if s.set_nonblocking(true).is_ok() {
                let mut c = Client { s, buf: Vec::new() };
                let _ = c.s.write_all(b"Ferrite monitor (QEMU HMP subset; `help`)\n(ferrite) ");
                self.clients.push(c);
            }
        }
        let mut ctl = Control::None;
        let mut i = 0;
        while i < self.clients.len() {
            let c = &mut self.clients[i];
            let mut chunk = [0u8; 1024];
            let mut close = false;
            match c.s.read(&mut chunk) {
                Ok(0) => close = true,
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => close = true,
            }
            while let Some(pos) = c.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = c.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                let (text, k) = execute(m, hist.as_deref_mut(), &line);
                let _ = c.s.set_nonblocking(false);
                let _ = c.s.write_all(text.as_bytes());
                let _ = c.s.write_all(b"(ferrite) ");
                let _ = c.s.set_nonblocking(true);
                if k != Control::None {
                    ctl = k;
                }
            }
            if c.buf.len() > MAX_LINE {
                eprintln!("ferrite: monitor: closing a connection: a line longer than {MAX_LINE} bytes");
                close = true;
            }
            if close {
                self.clients.remove(i);
            } else {
                i += 1;
            }
        }
        ctl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_as_qemu_spells_them() {
        assert_eq!(number("0x10"), Some(16));
        assert_eq!(number("16"), Some(16));
        assert_eq!(number("zz"), None);
    }

    #[test]
    fn screendump_writes_the_screenshot_png() {
        let dir = std::env::temp_dir().join(format!("ferrite-screendump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s.png");
        let path = file.to_str().unwrap();
        let mut plain = Machine::new(crate::MachineConfig::new(16 << 20, vec![0xF4; 0x1_0000])).unwrap();
        let (text, _) = execute(&mut plain, None, &format!("screendump {path}"));
        assert!(text.starts_with("screendump: no VGA"), "{text}");
        assert!(!file.exists());
        let mut cfg = crate::MachineConfig::new(16 << 20, vec![0xF4; 0x1_0000]);
        cfg.devices.push(crate::DeviceSpec::named("vga").unwrap());
        let mut m = Machine::new(cfg).unwrap();
        let (text, _) = execute(&mut m, None, &format!("screendump {path}"));
        assert!(text.starts_with("screen saved to"), "{text}");
        assert_eq!(std::fs::read(&file).unwrap(), m.screenshot_png().unwrap());
        let (text, _) = execute(&mut m, None, "screendump /nonexistent-dir/x.png");
        assert!(text.starts_with("screendump: /nonexistent-dir/x.png:"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
