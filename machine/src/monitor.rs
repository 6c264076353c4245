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
//! `savevm`/`loadvm` write and read [`crate::snapfile`]'s format, the one `--snapshot-at` writes and
//! `--restore` reads: a file saved from the monitor restores with `--restore` and the reverse.
//!
//! The commands are the rows of [`COMMANDS`]; a new command is one more row (its name, usage, one
//! line of help and the function that runs it), and `help` lists them all.

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

/// Writes the whole machine to `path` in [`crate::snapfile`]'s format; returns the bytes written.
pub fn save_snapshot_file(m: &Machine, path: &str) -> Result<u64, String> {
    crate::snapfile::save_file(m, std::path::Path::new(path))
        .map(|st| st.bytes)
        .map_err(|e| format!("{path}: {e}"))
}

/// Restores the whole machine from the snapshot file at `path` (written by `savevm` or
/// `--snapshot-at` for a machine of the same configuration). On any error the machine is left as it
/// was: the file is checked whole before the machine changes, and a state that does not fit this
/// machine is undone.
pub fn load_snapshot_file(m: &mut Machine, path: &str) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let before = m.save_state();
    if let Err(e) = crate::snapfile::restore(m, &data) {
        if matches!(e, crate::snapfile::SnapfileError::Mismatch(_)) {
            // The head was partly restored before it failed to fit: put the machine back.
            let _ = m.restore_state(&before);
        }
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

/// What a command runs on: the machine and, when the run keeps one, its reverse-execution history.
pub struct Target<'a> {
    /// The machine.
    pub m: &'a mut Machine,
    /// The reverse-execution history, if any.
    pub hist: Option<&'a mut History>,
}

/// One monitor command: a row of [`COMMANDS`].
pub struct Command {
    /// The name typed (first word of the line).
    pub name: &'static str,
    /// Other names for it.
    pub aliases: &'static [&'static str],
    /// Its arguments, as `help` shows them.
    pub usage: &'static str,
    /// One line saying what it does.
    pub help: &'static str,
    /// Runs it with the rest of the line (trimmed): the text to print and what the run loop must do.
    pub run: fn(&mut Target<'_>, &str) -> (String, Control),
}

fn text(s: impl Into<String>) -> (String, Control) {
    (s.into(), Control::None)
}

fn cmd_info(t: &mut Target<'_>, args: &str) -> (String, Control) {
    match args {
        "registers" | "r" => text(t.m.cpu.dump() + "\n"),
        "history" => match t.hist.as_deref() {
            Some(h) => {
                let (n, bytes) = h.usage();
                text(format!(
                    "{n} checkpoints ({} MiB, the last taken in {:.1} ms), earliest at {}, frontier {}, {} inputs logged, now at {}\n",
                    bytes >> 20,
                    h.last_checkpoint_cost().as_secs_f64() * 1e3,
                    h.earliest(),
                    h.frontier(),
                    h.inputs_logged(),
                    t.m.cpu.icount
                ))
            }
            None => text("no history\n"),
        },
        _ => text("info registers | info history\n"),
    }
}

fn cmd_x(t: &mut Target<'_>, args: &str) -> (String, Control) {
    text(examine(t.m, args, false))
}

fn cmd_xp(t: &mut Target<'_>, args: &str) -> (String, Control) {
    text(examine(t.m, args, true))
}

fn cmd_savevm(t: &mut Target<'_>, args: &str) -> (String, Control) {
    if args.is_empty() {
        return text("usage: savevm FILE\n");
    }
    match save_snapshot_file(t.m, args) {
        Ok(n) => text(format!("saved {n} bytes to {args} at instruction {}\n", t.m.cpu.icount)),
        Err(e) => text(format!("savevm: {e}\n")),
    }
}

fn cmd_screendump(t: &mut Target<'_>, args: &str) -> (String, Control) {
    if args.is_empty() {
        return text("usage: screendump FILE.png\n");
    }
    match t.m.screenshot_png() {
        None => text("screendump: no VGA (--bios, or --device vga)\n"),
        Some(png) => match std::fs::write(args, png) {
            Ok(()) => text(format!("screen saved to {args} at instruction {}\n", t.m.cpu.icount)),
            Err(e) => text(format!("screendump: {args}: {e}\n")),
        },
    }
}

fn cmd_loadvm(t: &mut Target<'_>, args: &str) -> (String, Control) {
    if args.is_empty() {
        return text("usage: loadvm FILE\n");
    }
    match load_snapshot_file(t.m, args) {
        Ok(()) => {
            if let Some(h) = t.hist.as_deref_mut() {
                h.reset(t.m);
            }
            text(format!("loaded {args}: at instruction {}\n", t.m.cpu.icount))
        }
        Err(e) => text(format!("loadvm: {e}\n")),
    }
}

fn cmd_stop(_: &mut Target<'_>, _: &str) -> (String, Control) {
    ("stopped\n".into(), Control::Stop)
}

fn cmd_cont(_: &mut Target<'_>, _: &str) -> (String, Control) {
    ("running\n".into(), Control::Cont)
}

fn cmd_quit(_: &mut Target<'_>, _: &str) -> (String, Control) {
    (String::new(), Control::Quit)
}

fn cmd_help(_: &mut Target<'_>, _: &str) -> (String, Control) {
    let mut out = String::new();
    for c in COMMANDS {
        let head = if c.usage.is_empty() { c.name.to_string() } else { format!("{} {}", c.name, c.usage) };
        out.push_str(&format!("{head:<24} {}\n", c.help));
    }
    text(out)
}

/// The monitor's commands (gdb's `monitor` adds `break-icount`, see [`crate::gdb`]).
pub static COMMANDS: &[Command] = &[
    Command {
        name: "info",
        aliases: &[],
        usage: "registers|history",
        help: "the CPU's registers / the reverse-execution checkpoints",
        run: cmd_info,
    },
    Command { name: "x", aliases: &[], usage: "/NFU ADDR", help: "memory at a linear address", run: cmd_x },
    Command {
        name: "xp",
        aliases: &[],
        usage: "/NFU ADDR",
        help: "memory at a physical address",
        run: cmd_xp,
    },
    Command {
        name: "savevm",
        aliases: &[],
        usage: "FILE",
        help: "the whole machine to FILE",
        run: cmd_savevm,
    },
    Command {
        name: "loadvm",
        aliases: &[],
        usage: "FILE",
        help: "the whole machine from FILE",
        run: cmd_loadvm,
    },
    Command {
        name: "screendump",
        aliases: &[],
        usage: "FILE.png",
        help: "the screen as a PNG (as --screenshot writes it)",
        run: cmd_screendump,
    },
    Command { name: "stop", aliases: &[], usage: "", help: "pause the guest", run: cmd_stop },
    Command { name: "cont", aliases: &["c"], usage: "", help: "resume the guest", run: cmd_cont },
    Command { name: "quit", aliases: &["q"], usage: "", help: "end Ferrite", run: cmd_quit },
    Command { name: "help", aliases: &["?"], usage: "", help: "this list", run: cmd_help },
];

/// Runs one monitor command line. Returns its output and what it asks of the run loop.
pub fn execute(m: &mut Machine, hist: Option<&mut History>, line: &str) -> (String, Control) {
    let line = line.trim();
    let (cmd, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    if cmd.is_empty() {
        return (String::new(), Control::None);
    }
    match COMMANDS.iter().find(|c| c.name == cmd || c.aliases.contains(&cmd)) {
        Some(c) => (c.run)(&mut Target { m, hist }, args.trim()),
        None => (format!("unknown command: `{line}` (try `help`)\n"), Control::None),
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

    use crate::{Machine, MachineConfig};

    /// A machine spinning in a loop that increments a RAM byte: `inc byte [0x500]; jmp short back` at the
    /// reset vector's segment (real mode).
    fn spinner(mem: u64) -> Machine {
        let mut rom = vec![0x90u8; 0x1_0000];
        // F000:FFF0: jmp F000:0000; at F000:0000: inc byte [0x500]; jmp short 0.
        rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]);
        rom[0..6].copy_from_slice(&[0xFE, 0x06, 0x00, 0x05, 0xEB, 0xFA]);
        Machine::new(MachineConfig::new(mem, rom)).expect("machine")
    }

    fn tmp(name: &str) -> String {
        let d = std::env::temp_dir().join(format!("ferrite-monitor-{}-{name}", std::process::id()));
        d.to_string_lossy().into_owned()
    }

    #[test]
    fn savevm_and_loadvm_use_the_snapshot_file_format() {
        let mut m = spinner(16 << 20);
        m.run(Some(10_001));
        let path = tmp("a.snap");
        let (out, k) = execute(&mut m, None, &format!("savevm {path}"));
        assert!(out.starts_with("saved ") && k == Control::None, "{out}");
        let (count, hash) = (m.cpu.icount, m.state_hash());
        // One format: the file is what --snapshot-at writes and --restore reads.
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[..8], crate::snapfile::MAGIC);
        let mut other = spinner(16 << 20);
        crate::snapfile::restore(&mut other, &data).expect("snapfile reads the monitor's file");
        assert_eq!(other.state_hash(), hash);

        m.run(Some(50_000));
        assert_ne!(m.state_hash(), hash);
        let (out, _) = execute(&mut m, None, &format!("loadvm {path}"));
        assert!(out.starts_with("loaded "), "{out}");
        assert_eq!((m.cpu.icount, m.state_hash()), (count, hash));

        // A file from a snapfile save loads through the monitor too.
        let p2 = tmp("b.snap");
        other.run(Some(20_000));
        crate::snapfile::save_file(&other, std::path::Path::new(&p2)).unwrap();
        let h2 = other.state_hash();
        let (out, _) = execute(&mut m, None, &format!("loadvm {p2}"));
        assert!(out.starts_with("loaded "), "{out}");
        assert_eq!(m.state_hash(), h2);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&p2);
    }

    #[test]
    fn a_bad_loadvm_changes_nothing() {
        let mut m = spinner(16 << 20);
        m.run(Some(5_000));
        let good = tmp("good.snap");
        execute(&mut m, None, &format!("savevm {good}"));
        m.run(Some(9_000));
        let hash = m.state_hash();
        let data = std::fs::read(&good).unwrap();
        // Corrupt (a flipped byte in the middle), truncated, another version, another machine.
        let bad = tmp("bad.snap");
        let mut corrupt = data.clone();
        let mid = corrupt.len() / 2;
        corrupt[mid] ^= 0x40;
        let mut version = data.clone();
        version[8] = 9;
        let mut small = spinner(8 << 20);
        small.run(Some(100));
        let mut foreign = Vec::new();
        crate::snapfile::save(&small, &mut foreign).unwrap();
        for (what, bytes) in [
            ("corrupt", corrupt),
            ("truncated", data[..data.len() - 3].to_vec()),
            ("version", version),
            ("foreign", foreign),
        ] {
            std::fs::write(&bad, &bytes).unwrap();
            let (out, _) = execute(&mut m, None, &format!("loadvm {bad}"));
            assert!(out.starts_with("loadvm: ") && out.trim().lines().count() == 1, "{what}: {out}");
            assert_eq!(m.state_hash(), hash, "{what}: the machine changed");
        }
        let (out, _) = execute(&mut m, None, "loadvm /nonexistent/dir/x.snap");
        assert!(out.starts_with("loadvm: "), "{out}");
        let _ = std::fs::remove_file(&good);
        let _ = std::fs::remove_file(&bad);
    }

    #[test]
    fn the_command_table_drives_dispatch_and_help() {
        let mut m = spinner(16 << 20);
        let (help, _) = execute(&mut m, None, "help");
        for c in COMMANDS {
            assert!(help.lines().any(|l| l.starts_with(c.name)), "help lacks {}", c.name);
        }
        assert_eq!(execute(&mut m, None, "c").1, Control::Cont);
        assert_eq!(execute(&mut m, None, "stop").1, Control::Stop);
        assert_eq!(execute(&mut m, None, "q").1, Control::Quit);
        assert!(execute(&mut m, None, "savevm").0.starts_with("usage"));
        assert!(execute(&mut m, None, "frobnicate now").0.starts_with("unknown command"));
        assert_eq!(execute(&mut m, None, "   "), (String::new(), Control::None));
        m.run(Some(1_000));
        let (x, _) = execute(&mut m, None, "xp /1b 0x500");
        assert!(x.starts_with("0000000000000500: 0x"), "{x}");
    }

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
