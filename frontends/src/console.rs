//! The interactive console: COM1 on the terminal. When stdin is a terminal it is put in raw mode (the
//! guest does its own line editing) and restored on exit. As QEMU's `-serial mon:stdio`: Ctrl-A x
//! quits, Ctrl-A Ctrl-A sends a literal Ctrl-A, and Ctrl-A c switches between the guest's console and
//! the monitor (`ferrite run` without a debugger: command lines typed there run between guest
//! instructions and never reach the guest, so a recording holds only what the guest was given).

use machine::HostEvent;
use std::io::{Read, Write};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Restores the terminal's mode when dropped.
pub struct RawMode {
    saved: Option<libc::termios>,
}

impl RawMode {
    /// Puts stdin in raw mode if it is a terminal.
    pub fn enable() -> RawMode {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } != 1 {
            return RawMode { saved: None };
        }
        // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr, which fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked above) and `t` is a valid termios to fill.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return RawMode { saved: None };
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut t) };
        // Keep output post-processing so "\n" from the guest still starts a new line on the host.
        t.c_oflag |= libc::OPOST;
        // SAFETY: fd 0 is a terminal; `t` is a fully initialised termios.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores the attributes read from the same terminal in `enable`.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// What stdin's bytes produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// An event for the machine (a byte for the guest, or quit).
    Host(HostEvent),
    /// A complete monitor command line.
    MonitorLine(String),
    /// Switched to the monitor (`true`) or back to the guest's console.
    Switched(bool),
    /// Echo of what is typed in the monitor (a terminal in raw mode does not echo).
    Echo(Vec<u8>),
}

/// What the monitor's channel carries for Ctrl-A x (a line no one can type: it holds a NUL), so that
/// a guest stopped from the monitor can still be quit.
pub const QUIT_LINE: &str = "\0quit";

/// Longest monitor line kept; further bytes are dropped.
const MAX_MONITOR_LINE: usize = 4096;

/// Turns the raw byte stream into [`Key`]s, handling the Ctrl-A escape.
#[derive(Default)]
pub struct Escape {
    pending: bool,
    /// Ctrl-A c switches to the monitor.
    with_monitor: bool,
    /// In the monitor: the line typed so far.
    line: Option<Vec<u8>>,
}

impl Escape {
    /// An escape handler; `with_monitor` enables Ctrl-A c.
    pub fn new(with_monitor: bool) -> Escape {
        Escape { with_monitor, ..Escape::default() }
    }

    /// Feeds one byte; returns what it produces.
    pub fn feed(&mut self, b: u8) -> Vec<Key> {
        if self.pending {
            self.pending = false;
            return match b {
                b'x' | b'X' => vec![Key::Host(HostEvent::Quit)],
                0x01 if self.line.is_none() => vec![Key::Host(HostEvent::Input(0x01))],
                b'c' | b'C' if self.with_monitor => {
                    let on = self.line.is_none();
                    self.line = if on { Some(Vec::new()) } else { None };
                    vec![Key::Switched(on)]
                }
                _ => vec![],
            };
        }
        if b == 0x01 {
            self.pending = true;
            return vec![];
        }
        let Some(line) = &mut self.line else { return vec![Key::Host(HostEvent::Input(b))] };
        match b {
            b'\r' | b'\n' => {
                let text = String::from_utf8_lossy(line).into_owned();
                line.clear();
                vec![Key::Echo(b"\r\n".to_vec()), Key::MonitorLine(text)]
            }
            // Nothing typed carries a NUL (see QUIT_LINE).
            0 => vec![],
            // Backspace / DEL.
            0x08 | 0x7f => match line.pop() {
                Some(_) => vec![Key::Echo(b"\x08 \x08".to_vec())],
                None => vec![],
            },
            _ if line.len() < MAX_MONITOR_LINE => {
                line.push(b);
                vec![Key::Echo(vec![b])]
            }
            _ => vec![],
        }
    }
}

/// Starts the stdin reader thread; returns the receiving end for the machine.
pub fn spawn_reader() -> Receiver<HostEvent> {
    spawn(None)
}

/// [`spawn_reader`] with the monitor escape: command lines arrive on the second receiver, each
/// followed by [`HostEvent::Attention`] on the first, so that the run loop comes back to run it.
pub fn spawn_reader_with_monitor() -> (Receiver<HostEvent>, Receiver<String>) {
    let (mtx, mrx) = channel();
    (spawn(Some(mtx)), mrx)
}

fn spawn(monitor: Option<Sender<String>>) -> Receiver<HostEvent> {
    let (tx, rx): (Sender<HostEvent>, Receiver<HostEvent>) = channel();
    spawn_into(tx, monitor);
    rx
}

/// Starts the stdin reader thread sending to `tx` (shared with a display window's input).
pub fn spawn_reader_into(tx: Sender<HostEvent>) {
    spawn_into(tx, None)
}

fn spawn_into(tx: Sender<HostEvent>, monitor: Option<Sender<String>>) {
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(0) } == 1;
    std::thread::spawn(move || {
        let mut esc = Escape::new(monitor.is_some());
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    for &b in &buf[..n] {
                        for key in esc.feed(b) {
                            let sent = match key {
                                Key::Host(ev) => {
                                    if let (HostEvent::Quit, Some(m)) = (ev, &monitor) {
                                        let _ = m.send(QUIT_LINE.to_string());
                                    }
                                    tx.send(ev).is_ok()
                                }
                                Key::MonitorLine(line) => match &monitor {
                                    Some(m) => m.send(line).is_ok() && tx.send(HostEvent::Attention).is_ok(),
                                    None => true,
                                },
                                Key::Switched(on) => {
                                    let text: &[u8] = if on {
                                        b"\r\nQEMU-style monitor (Ctrl-A c: back to the console; `help`)\r\n(ferrite) "
                                    } else {
                                        b"\r\n[console]\r\n"
                                    };
                                    let mut out = std::io::stdout().lock();
                                    let _ = out.write_all(text);
                                    let _ = out.flush();
                                    true
                                }
                                Key::Echo(bytes) => {
                                    if tty {
                                        let mut out = std::io::stdout().lock();
                                        let _ = out.write_all(&bytes);
                                        let _ = out.flush();
                                    }
                                    true
                                }
                            };
                            if !sent {
                                return;
                            }
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(b: u8) -> Vec<Key> {
        vec![Key::Host(HostEvent::Input(b))]
    }

    #[test]
    fn ctrl_a_escapes() {
        let mut e = Escape::new(false);
        assert_eq!(e.feed(b'a'), host(b'a'));
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(b'x'), vec![Key::Host(HostEvent::Quit)]);
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(0x01), host(0x01));
        assert!(e.feed(0x01).is_empty());
        assert!(e.feed(b'c').is_empty(), "Ctrl-A c does nothing without a monitor");
        assert_eq!(e.feed(b'c'), host(b'c'));
    }

    #[test]
    fn ctrl_a_c_toggles_the_monitor() {
        let mut e = Escape::new(true);
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(b'c'), vec![Key::Switched(true)]);
        // Typed bytes go to the line (echoed), never to the guest; backspace edits it.
        let mut keys = Vec::new();
        for &b in b"info regz\x7fisters\r" {
            keys.extend(e.feed(b));
        }
        assert!(keys.iter().all(|k| !matches!(k, Key::Host(_))), "{keys:?}");
        assert_eq!(keys.last(), Some(&Key::MonitorLine("info registers".into())));
        // Ctrl-A Ctrl-A is not a byte for the guest while in the monitor; Ctrl-A x still quits.
        assert!(e.feed(0x01).is_empty());
        assert!(e.feed(0x01).is_empty());
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(b'x'), vec![Key::Host(HostEvent::Quit)]);
        // Back to the console: bytes reach the guest again.
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(b'c'), vec![Key::Switched(false)]);
        assert_eq!(e.feed(b'l'), host(b'l'));
        // An overlong line is cut, not grown without bound.
        e.feed(0x01);
        e.feed(b'c');
        for _ in 0..10_000 {
            e.feed(b'a');
        }
        match e.feed(b'\n').pop() {
            Some(Key::MonitorLine(l)) => assert_eq!(l.len(), MAX_MONITOR_LINE),
            k => panic!("{k:?}"),
        }
    }
}
