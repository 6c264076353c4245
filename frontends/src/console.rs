//! The interactive console: COM1 on the terminal. When stdin is a terminal it is put in raw mode (the
//! guest does its own line editing) and restored on exit; Ctrl-A x quits, as in QEMU; Ctrl-A Ctrl-A
//! sends a literal Ctrl-A (Ctrl-A c is reserved for a monitor).

use machine::HostEvent;
use std::io::Read;
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

/// Turns the raw byte stream into host events, handling the Ctrl-A escape.
#[derive(Default)]
pub struct Escape {
    pending: bool,
}

impl Escape {
    /// Feeds one byte; returns the events it produces.
    pub fn feed(&mut self, b: u8) -> Vec<HostEvent> {
        if self.pending {
            self.pending = false;
            return match b {
                b'x' | b'X' => vec![HostEvent::Quit],
                0x01 => vec![HostEvent::Input(0x01)],
                _ => vec![],
            };
        }
        if b == 0x01 {
            self.pending = true;
            return vec![];
        }
        vec![HostEvent::Input(b)]
    }
}

/// Starts the stdin reader thread; returns the receiving end for the machine.
pub fn spawn_reader() -> Receiver<HostEvent> {
    let (tx, rx): (Sender<HostEvent>, Receiver<HostEvent>) = channel();
    spawn_reader_into(tx);
    rx
}

/// Starts the stdin reader thread sending to `tx` (shared with a display window's input).
pub fn spawn_reader_into(tx: Sender<HostEvent>) {
    std::thread::spawn(move || {
        let mut esc = Escape::default();
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    for &b in &buf[..n] {
                        for ev in esc.feed(b) {
                            if tx.send(ev).is_err() {
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

    #[test]
    fn ctrl_a_escapes() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b'a'), vec![HostEvent::Input(b'a')]);
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(b'x'), vec![HostEvent::Quit]);
        assert!(e.feed(0x01).is_empty());
        assert_eq!(e.feed(0x01), vec![HostEvent::Input(0x01)]);
        assert!(e.feed(0x01).is_empty());
        assert!(e.feed(b'c').is_empty(), "Ctrl-A c is reserved");
    }
}
