//! `--display sdl`: the VGA screen in an SDL2 window (the `sdl` cargo feature).
//!
//! The window lives on a thread of its own, which owns everything SDL: it shows the latest frame the
//! machine thread handed it ([`Window::show`], a frame rendered by `Vga::render` at a point of the
//! virtual clock), and turns host input into [`HostEvent`]s on the machine's input channel, so every key
//! and mouse movement enters the guest through the stamped input port (recorded and replayed like
//! console bytes). Nothing the window does touches the machine: the guest runs the same with or without
//! it.
//!
//! Keys go to the i8042's keyboard as scan code set 2 (`keymap.rs`); while the mouse is grabbed (a click
//! in the window, as in QEMU), its motion, buttons and wheel go to the PS/2 mouse. Ctrl+Alt+G releases
//! (or takes) the grab, Ctrl+Alt+Q quits, and so does closing the window: the run ends as with Ctrl-A x,
//! through the same path (disks flushed, exit status 0).

use crate::keymap;
use machine::HostEvent;
use sdl2::event::Event;
use sdl2::keyboard::{Mod, Scancode};
use sdl2::mouse::MouseButton;
use sdl2::pixels::PixelFormatEnum;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// The window's title, and its title while the mouse is grabbed.
const TITLE: &str = "Ferrite";
const TITLE_GRABBED: &str = "Ferrite - Press Ctrl+Alt+G to release grab";

/// A rendered screen handed to the window thread.
struct Screen {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// The SDL window (see the module docs). Dropping it closes the window.
pub struct Window {
    latest: Arc<Mutex<Option<Screen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Window {
    /// Opens the window; host input from it goes to `tx`. Fails (with SDL's reason) when there is no
    /// display to open it on.
    pub fn open(tx: Sender<HostEvent>) -> Result<Window, String> {
        let latest = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (l, s) = (latest.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("sdl".into())
            .spawn(move || {
                if let Err(e) = window_thread(&tx, &l, &s, &ready_tx) {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| format!("cannot start the window thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Window { latest, stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the window thread ended before opening the window".into()),
        }
    }

    /// Whether the window has shown the last frame given to it (so rendering another one is useful).
    pub fn wants_frame(&self) -> bool {
        self.latest.lock().map(|l| l.is_none()).unwrap_or(false)
    }

    /// Hands the window a frame: `width` x `height` RGB pixels. It replaces one not shown yet.
    pub fn show(&self, width: usize, height: usize, rgb: Vec<u8>) {
        if width == 0 || height == 0 || rgb.len() != width * height * 3 {
            return;
        }
        if let Ok(mut l) = self.latest.lock() {
            *l = Some(Screen { width, height, rgb });
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The buttons of the PS/2 mouse: bit 0 left, 1 right, 2 middle.
fn button_bit(b: MouseButton) -> u8 {
    match b {
        MouseButton::Left => 1,
        MouseButton::Right => 2,
        MouseButton::Middle => 4,
        _ => 0,
    }
}

/// A motion clamped to the mouse event's range.
fn clamp16(v: i32) -> i16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// The window thread: opens the window, then shows frames and forwards input until told to stop.
fn window_thread(
    tx: &Sender<HostEvent>,
    latest: &Mutex<Option<Screen>>,
    stop: &AtomicBool,
    ready: &Sender<Result<(), String>>,
) -> Result<(), String> {
    let sdl = sdl2::init()?;
    let video = sdl.video()?;
    let mouse = sdl.mouse();
    let window = video.window(TITLE, 640, 480).position_centered().build().map_err(|e| e.to_string())?;
    // The software renderer: exact pixels (the frame is shown 1:1) and no GL needed (Xvfb).
    let mut canvas = window.into_canvas().software().build().map_err(|e| e.to_string())?;
    let creator = canvas.texture_creator();
    let mut texture = None;
    let mut size = (0usize, 0usize);
    let mut pump = sdl.event_pump()?;
    let _ = ready.send(Ok(()));
    let mut grabbed = false;
    let mut buttons = 0u8;
    let send = |e: HostEvent| {
        let _ = tx.send(e);
    };
    let set_grab = |canvas: &mut sdl2::render::WindowCanvas, on: bool| {
        mouse.set_relative_mouse_mode(on);
        canvas.window_mut().set_grab(on);
        let _ = canvas.window_mut().set_title(if on { TITLE_GRABBED } else { TITLE });
    };
    while !stop.load(Ordering::Relaxed) {
        let mut events = Vec::new();
        if let Some(e) = pump.wait_event_timeout(10) {
            events.push(e);
            events.extend(pump.poll_iter());
        }
        // A window event (exposed, resized, shown) redraws the last frame.
        let mut redraw = false;
        for e in events {
            match e {
                Event::Quit { .. } => send(HostEvent::Quit),
                Event::Window { .. } => redraw = true,
                Event::KeyDown { scancode: Some(sc), keymod, .. } => {
                    let ctrl_alt = keymod.intersects(Mod::LCTRLMOD | Mod::RCTRLMOD)
                        && keymod.intersects(Mod::LALTMOD | Mod::RALTMOD);
                    if ctrl_alt && sc == Scancode::G {
                        grabbed = !grabbed;
                        set_grab(&mut canvas, grabbed);
                        continue;
                    }
                    if ctrl_alt && sc == Scancode::Q {
                        send(HostEvent::Quit);
                        continue;
                    }
                    for b in keymap::set2_bytes(sc as i32 as u16, true) {
                        send(HostEvent::Key(b));
                    }
                }
                Event::KeyUp { scancode: Some(sc), .. } => {
                    for b in keymap::set2_bytes(sc as i32 as u16, false) {
                        send(HostEvent::Key(b));
                    }
                }
                Event::MouseButtonDown { mouse_btn, .. } => {
                    if !grabbed {
                        grabbed = true;
                        set_grab(&mut canvas, true);
                        continue;
                    }
                    buttons |= button_bit(mouse_btn);
                    send(HostEvent::Mouse { dx: 0, dy: 0, dz: 0, buttons });
                }
                Event::MouseButtonUp { mouse_btn, .. } if grabbed => {
                    buttons &= !button_bit(mouse_btn);
                    send(HostEvent::Mouse { dx: 0, dy: 0, dz: 0, buttons });
                }
                Event::MouseMotion { xrel, yrel, .. } if grabbed => {
                    // SDL's y grows downwards, the PS/2 mouse's upwards.
                    send(HostEvent::Mouse { dx: clamp16(xrel), dy: clamp16(-yrel), dz: 0, buttons });
                }
                Event::MouseWheel { y, .. } if grabbed => {
                    // SDL's positive y is away from the user; the IntelliMouse's positive Z is towards.
                    send(HostEvent::Mouse { dx: 0, dy: 0, dz: (-y).clamp(-8, 7) as i8, buttons });
                }
                _ => {}
            }
        }
        let frame = latest.lock().ok().and_then(|mut l| l.take());
        if let Some(f) = frame {
            if size != (f.width, f.height) || texture.is_none() {
                let (w, h) = (f.width as u32, f.height as u32);
                texture = Some(
                    creator
                        .create_texture_streaming(PixelFormatEnum::RGB24, w, h)
                        .map_err(|e| e.to_string())?,
                );
                canvas.window_mut().set_size(w, h).map_err(|e| e.to_string())?;
                size = (f.width, f.height);
            }
            if let Some(t) = texture.as_mut() {
                t.update(None, &f.rgb, f.width * 3).map_err(|e| e.to_string())?;
                redraw = true;
            }
        }
        if redraw && let Some(t) = texture.as_ref() {
            canvas.copy(t, None, None)?;
            canvas.present();
        }
    }
    Ok(())
}
