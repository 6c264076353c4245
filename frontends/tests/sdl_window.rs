//! The SDL window, for real, under Xvfb (built only with the `sdl` feature; `scripts/sdl_check.sh` runs
//! it in CI): SeaBIOS boots our boot sector `kbd_echo` from a disk with `--display sdl`; xdotool types
//! into the window, whose keys go through the scan code translation, the i8042 and the BIOS's INT 16h to
//! the boot sector, which echoes them through INT 10h; then the window's own pixels (xwd of the X
//! window) must be exactly Ferrite's `--screenshot` of the same screen, taken when Ctrl+Alt+Q in the
//! window ends the run (the guest is waiting for the next key, so nothing changes in between).
//!
//! Needs Xvfb, xdotool and xwd (Debian's xvfb, xdotool, x11-apps). With `FERRITE_SDL_WINDOW_PNG=FILE`
//! the window's capture is also saved as a PNG (docs/images/sdl-window.png was made so).

#[cfg(not(feature = "sdl"))]
#[test]
fn sdl_window_needs_the_sdl_feature() {
    println!("skipped: built without the `sdl` feature (scripts/sdl_check.sh builds it and runs this test)");
}

#[cfg(feature = "sdl")]
mod window {
    use std::io::{BufReader, Read};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use machine::png;

    /// SeaBIOS's bios.bin, or why it cannot be had.
    fn seabios() -> Result<PathBuf, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["images", "--seabios"])
            .output()
            .map_err(|e| format!("cannot run ferrite images: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.strip_prefix("bios=")).map(PathBuf::from).ok_or("no bios= line".into())
    }

    /// Whether `tool` runs at all.
    fn have(tool: &str) -> bool {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Kills and reaps a child when dropped.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// An RGB image.
    #[derive(PartialEq, Eq, Debug)]
    struct Image {
        width: usize,
        height: usize,
        rgb: Vec<u8>,
    }

    /// Decodes one of Ferrite's own PNGs (8-bit RGB, filter type 0 on every row).
    fn decode_png(data: &[u8]) -> Image {
        assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n");
        let (mut pos, mut idat, mut size) = (8, Vec::new(), (0, 0));
        while pos + 8 <= data.len() {
            let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &data[pos + 4..pos + 8];
            let body = &data[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => {
                    size = (
                        u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize,
                        u32::from_be_bytes(body[4..8].try_into().unwrap()) as usize,
                    );
                    assert_eq!(&body[8..10], &[8, 2], "8-bit RGB");
                }
                b"IDAT" => idat.extend_from_slice(body),
                _ => {}
            }
            pos += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).unwrap();
        let (w, h) = size;
        let mut rgb = Vec::with_capacity(w * h * 3);
        for row in raw.chunks(w * 3 + 1) {
            assert_eq!(row[0], 0, "filter type 0");
            rgb.extend_from_slice(&row[1..]);
        }
        assert_eq!(rgb.len(), w * h * 3);
        Image { width: w, height: h, rgb }
    }

    /// Decodes an xwd dump (X Window Dump version 7, a 24/32-bit ZPixmap as Xvfb gives at depth 24).
    fn decode_xwd(data: &[u8]) -> Image {
        let f = |i: usize| u32::from_be_bytes(data[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        let (header, version, format, width, height) = (f(0), f(1), f(2), f(4), f(5));
        assert_eq!((version, format), (7, 2), "an X11 ZPixmap dump");
        let (byte_order, bpp, bpl, ncolors) = (f(7), f(11), f(12), f(19));
        let (rmask, gmask, bmask) = (f(14) as u32, f(15) as u32, f(16) as u32);
        assert!(bpp == 32 || bpp == 24, "{bpp} bits per pixel");
        let start = header + ncolors * 12;
        let channel = |p: u32, mask: u32| ((p & mask) >> mask.trailing_zeros()) as u8;
        let mut rgb = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let o = start + y * bpl + x * bpp / 8;
                let b = &data[o..o + bpp / 8];
                let p = match (bpp, byte_order) {
                    (32, 0) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    (32, _) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    (_, 0) => u32::from_le_bytes([b[0], b[1], b[2], 0]),
                    _ => u32::from_be_bytes([0, b[0], b[1], b[2]]),
                };
                rgb.extend_from_slice(&[channel(p, rmask), channel(p, gmask), channel(p, bmask)]);
            }
        }
        Image { width, height, rgb }
    }

    /// The window's pixels now.
    fn capture(display: &str, window: &str, dir: &Path) -> Image {
        let file = dir.join("window.xwd");
        let st = Command::new("xwd")
            .env("DISPLAY", display)
            .args(["-silent", "-id", window, "-out"])
            .arg(&file)
            .status()
            .unwrap();
        assert!(st.success(), "xwd failed");
        decode_xwd(&std::fs::read(&file).unwrap())
    }

    fn xdotool(display: &str, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("60")
            .arg("xdotool")
            .args(args)
            .env("DISPLAY", display)
            .output()
            .unwrap();
        assert!(out.status.success(), "xdotool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A display number no X server uses.
    fn free_display() -> u32 {
        (90..200)
            .find(|n| {
                !Path::new(&format!("/tmp/.X{n}-lock")).exists()
                    && !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            })
            .expect("a free X display number")
    }

    /// Waits until the debug console (lines from `rx`, collected into `log`) shows `want`.
    fn wait_for(rx: &mpsc::Receiver<u8>, log: &mut Vec<u8>, want: &[u8], secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while !log.windows(want.len()).any(|w| w == want) {
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {:?} on the debug console: {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(log)
            );
            if let Ok(b) = rx.recv_timeout(left) {
                log.push(b);
            }
        }
    }

    #[test]
    fn the_window_shows_the_screen_and_takes_keys() {
        for tool in ["Xvfb", "xdotool", "xwd"] {
            if !have(tool) {
                println!("skipped: {tool} is not installed (apt-get install xvfb xdotool x11-apps)");
                return;
            }
        }
        let bios = match seabios() {
            Ok(p) => p,
            Err(why) => {
                println!("skipped: SeaBIOS unavailable ({why})");
                return;
            }
        };
        let dir = std::env::temp_dir().join(format!("ferrite-sdl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = dir.join("disk.img");
        let mut img = test_roms::boot_sector("kbd_echo").expect("kbd_echo assembled").to_vec();
        img.resize(1 << 20, 0);
        std::fs::write(&disk, img).unwrap();
        let shot = dir.join("shot.png");

        let n = free_display();
        let display = format!(":{n}");
        let _xvfb = Reap(
            Command::new("Xvfb")
                .args([display.as_str(), "-screen", "0", "1024x768x24", "-nolisten", "tcp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("Xvfb starts"),
        );
        let socket = format!("/tmp/.X11-unix/X{n}");
        let end = Instant::now() + Duration::from_secs(30);
        while !Path::new(&socket).exists() {
            assert!(Instant::now() < end, "Xvfb did not start");
            std::thread::sleep(Duration::from_millis(50));
        }

        let mut ferrite = Reap(
            Command::new(env!("CARGO_BIN_EXE_ferrite"))
                .arg("run")
                .arg("--bios")
                .arg(&bios)
                .arg("--hda")
                .arg(&disk)
                .args(["--accel", "jit", "--memory", "64M", "--display", "sdl", "--debugcon", "stdout"])
                .arg("--screenshot")
                .arg(&shot)
                .env("DISPLAY", &display)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ferrite starts"),
        );
        let stdout = ferrite.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for b in BufReader::new(stdout).bytes() {
                let Ok(b) = b else { return };
                if tx.send(b).is_err() {
                    return;
                }
            }
        });
        let mut log = Vec::new();
        let window = xdotool(&display, &["search", "--sync", "--name", "^Ferrite$"]);
        let window = window.lines().next().unwrap().to_string();
        wait_for(&rx, &mut log, b"READY\n", 120);
        // Let the window show the prompt, then type.
        std::thread::sleep(Duration::from_secs(1));
        let before = capture(&display, &window, &dir);
        xdotool(&display, &["windowfocus", "--sync", &window]);
        xdotool(&display, &["type", "--delay", "60", "Hi 42"]);
        xdotool(&display, &["key", "Return"]);
        xdotool(&display, &["type", "--delay", "60", "ok!"]);
        wait_for(&rx, &mut log, b"Hi 42\rok!", 120);
        // The window shows a frame after the echo once it has been rendered: wait until it is steady.
        let end = Instant::now() + Duration::from_secs(60);
        let mut last = capture(&display, &window, &dir);
        let mut same = 0;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = capture(&display, &window, &dir);
            same = if now == last && now != before { same + 1 } else { 0 };
            if same == 3 {
                break;
            }
            assert!(Instant::now() < end, "the window did not settle after the keys");
            last = now;
        }
        xdotool(&display, &["key", "ctrl+alt+q"]);
        let end = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = ferrite.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "ferrite did not quit on Ctrl+Alt+Q");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut err = String::new();
        let _ = ferrite.0.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "ferrite: {status}: {err}");
        let screenshot = decode_png(&std::fs::read(&shot).expect("the screenshot at the end of the run"));
        if let Ok(p) = std::env::var("FERRITE_SDL_WINDOW_PNG") {
            std::fs::write(&p, png::encode_rgb(last.width, last.height, &last.rgb)).unwrap();
        }
        assert_eq!((last.width, last.height), (screenshot.width, screenshot.height), "window size");
        let differing: Vec<usize> = (0..last.width * last.height)
            .filter(|i| last.rgb[i * 3..i * 3 + 3] != screenshot.rgb[i * 3..i * 3 + 3])
            .collect();
        if !differing.is_empty() {
            let w = dir.join("window.png");
            std::fs::write(&w, png::encode_rgb(last.width, last.height, &last.rgb)).unwrap();
            let (x, y) = (differing[0] % last.width, differing[0] / last.width);
            panic!(
                "{} pixels of the window differ from the screenshot {}, the first at ({x}, {y}); the window is {}",
                differing.len(),
                shot.display(),
                w.display()
            );
        }
        assert_ne!(before, last, "the keys changed the screen");
        let _ = std::fs::remove_dir_all(dir);
    }
}
