//! The command line: bad input gets a one-line error and a non-zero exit; the demo runs.

use std::process::Command;

fn ferrite(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite")).args(args).output().expect("run ferrite");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_is_one_line_and_exit_2() {
    let (code, _, err) = ferrite(&["run", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("--no-such-flag"), "stderr: {err}");
}

#[test]
fn bad_memory_size_is_one_line() {
    let (code, _, err) = ferrite(&["run", "--memory", "lots"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("lots"), "stderr: {err}");
}

#[test]
fn missing_rom_is_one_line() {
    let (code, _, err) = ferrite(&["run", "--rom", "/nonexistent/bios.bin"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("/nonexistent/bios.bin"), "stderr: {err}");
}

#[test]
fn wrong_size_rom_is_rejected() {
    let p = std::env::temp_dir().join(format!("ferrite-cli-test-{}.bin", std::process::id()));
    std::fs::write(&p, [0u8; 1000]).unwrap();
    let (code, _, err) = ferrite(&["run", "--rom", p.to_str().unwrap()]);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("multiple of 4 KiB"), "stderr: {err}");
}

#[test]
fn demo_runs_to_long_mode() {
    let (code, out, err) = ferrite(&["run", "--demo"]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(out.contains("long mode"), "stdout: {out}");
}

/// The default engine is `auto`: a run that needs exact instruction counts takes the JIT on any host
/// (under KVM a budget would be host time), and `--stats` names the engine.
#[test]
fn the_default_engine_counts_instructions_when_asked_to() {
    let (code, _, err) = ferrite(&["run", "--demo", "--max-instructions", "20000", "--stats"]);
    assert_eq!(code, 124, "stderr: {err}");
    assert!(err.contains("ferrite: 20000 instructions in ") && err.contains(" under jit"), "stderr: {err}");
    assert!(!err.contains("accel auto"), "the default chooses silently: {err}");
    let (_, _, err) = ferrite(&["run", "--demo", "--accel", "auto", "--max-instructions", "20000"]);
    assert!(
        err.contains("accel auto: jit (--max-instructions needs an instruction-counting engine)"),
        "stderr: {err}"
    );
    let (_, _, err) =
        ferrite(&["run", "--demo", "--accel", "interp", "--max-instructions", "20000", "--stats"]);
    assert!(err.contains(" under interp"), "stderr: {err}");
}

#[test]
fn triple_fault_stops_with_a_reason_and_a_dump() {
    // At the reset vector: `lidt [0]` (RAM is zero: IDT limit 0), then `int3`: the IVT entry is beyond the
    // limit (#GP), so is #GP's, so is #DF's -> triple fault.
    let mut rom = [0xf4u8; 4096];
    rom[0xff0..0xff6].copy_from_slice(&[0x0f, 0x01, 0x1e, 0x00, 0x00, 0xcc]);
    let p = std::env::temp_dir().join(format!("ferrite-cli-tf-{}.bin", std::process::id()));
    std::fs::write(&p, rom).unwrap();
    let (code, _, err) = ferrite(&["run", "--rom", p.to_str().unwrap(), "--max-instructions", "1000"]);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(code, 70, "stderr: {err}");
    assert!(err.lines().next().unwrap_or("").contains("triple fault"), "stderr: {err}");
    assert!(err.contains("rip="), "stderr: {err}");
}

#[test]
fn bad_rtc_and_com2_are_one_line_errors() {
    let (code, _, err) = ferrite(&["run", "--demo", "--rtc", "yesterday"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("yesterday"), "stderr: {err}");
    let (code, _, err) = ferrite(&["run", "--demo", "--com2", "tcp:1234"]);
    assert_eq!(code, 2);
    assert!(err.contains("tcp:1234"), "stderr: {err}");
}

#[test]
fn com2_output_goes_to_a_file() {
    // The demo does not write to COM2: the file is created and stays empty; the run succeeds with a
    // chosen RTC start.
    let p = std::env::temp_dir().join(format!("ferrite-com2-{}.txt", std::process::id()));
    let spec = format!("file:{}", p.display());
    let (code, _, err) = ferrite(&["run", "--demo", "--com2", &spec, "--rtc", "2030-06-15T12:00:00"]);
    assert_eq!(code, 1, "stderr: {err}");
    assert!(p.exists());
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn bad_disk_specs_are_one_line() {
    for (spec, needle) in [
        ("x.img,if=scsi", "if=scsi"),
        ("x.img,cache=none", "unknown option 'cache'"),
        ("x.img,format", "not key=value"),
        ("", "no image path"),
    ] {
        let (code, _, err) = ferrite(&["run", "--disk", spec]);
        assert_eq!(code, 2, "{spec}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{spec}: stderr: {err}");
        assert!(err.contains(needle), "{spec}: stderr: {err}");
    }
    let (code, _, err) = ferrite(&["run", "--hda", "/nonexistent/disk.img"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("/nonexistent/disk.img"), "stderr: {err}");
}

#[test]
fn an_image_in_use_by_another_process_is_refused() {
    let Ok(out) = Command::new("qemu-io").arg("--version").output() else {
        eprintln!("skipped: qemu-io is not installed (scripts/setup.sh installs qemu-utils)");
        return;
    };
    assert!(out.status.success());
    let p = std::env::temp_dir().join(format!("ferrite-cli-lock-{}.img", std::process::id()));
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    // Another process (QEMU's qemu-io) holds the image open for writing while it sleeps.
    let mut holder = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "sleep 20000", p.to_str().unwrap()])
        .spawn()
        .expect("start qemu-io");
    // Wait until its write lock (QEMU's byte 101) is visible, so Ferrite cannot win the race.
    let f = std::fs::File::open(&p).unwrap();
    let mut locked = false;
    for _ in 0..400 {
        if holder.try_wait().unwrap().is_some() {
            break;
        }
        // SAFETY: all-zero is a valid flock; the descriptor is open during the call.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_start = 101;
        fl.l_len = 1;
        // SAFETY: as above; F_OFD_GETLK only writes into `fl`.
        let r = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_OFD_GETLK, &mut fl) };
        if r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short {
            locked = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let refused = locked.then(|| {
        let (code, _, err) = ferrite(&["run", "--disk", &format!("{},format=raw", p.display())]);
        (code, err)
    });
    let _ = holder.kill();
    let _ = holder.wait();
    std::fs::remove_file(&p).unwrap();
    let (code, err) = refused.expect("qemu-io never locked the image");
    assert!(err.contains("in use by another process"), "stderr: {err}");
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
}

/// A bzImage cut short (its setup header's syssize promises more protected-mode code than the file
/// holds) is refused before anything runs: one line naming the truncation, exit status 2, never a boot
/// into a triple fault.
#[test]
fn truncated_bzimage_is_one_line() {
    // Boot protocol 2.15, 4 setup sectors, loaded high, 64-bit entry; syssize promises 64 KiB but only
    // 4 KiB of protected-mode code follow the setup.
    let mut k = vec![0u8; 5 * 512 + 4096];
    k[0x1f1] = 4;
    k[0x1f4..0x1f8].copy_from_slice(&(0x1_0000u32 / 16).to_le_bytes());
    k[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    k[0x201] = 0x6a;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    k[0x211] = 1;
    k[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    k[0x234] = 1;
    k[0x236..0x238].copy_from_slice(&3u16.to_le_bytes());
    k[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    k[0x260..0x264].copy_from_slice(&0x100_0000u32.to_le_bytes());
    let p = std::env::temp_dir().join(format!("ferrite-cli-trunc-{}.bzImage", std::process::id()));
    std::fs::write(&p, &k).unwrap();
    let (code, _, err) =
        ferrite(&["run", "--kernel", p.to_str().unwrap(), "--append", "x", "--max-instructions", "1000"]);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(code, 2, "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("truncated") && err.contains("65536 bytes"), "stderr: {err}");
}

/// `--device` takes the names of the machine's device table; an unknown one is one line listing them.
#[test]
fn unknown_device_is_one_line_naming_the_known_ones() {
    let (code, _, err) = ferrite(&["run", "--demo", "--device", "floppy"]);
    assert_eq!(code, 2);
    assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
    assert!(err.contains("floppy") && err.contains("edu") && err.contains("testdev"), "stderr: {err}");
}

/// `--stats` ends with the state hash, the same for two runs of the same guest.
#[test]
fn stats_print_a_repeatable_state_hash() {
    let run = || {
        let (_, _, err) = ferrite(&["run", "--demo", "--memory", "16M", "--stats"]);
        err.lines()
            .find_map(|l| l.strip_prefix("ferrite: state hash ").map(str::to_string))
            .unwrap_or_else(|| panic!("no hash line: {err}"))
    };
    let h = run();
    assert_eq!(h.len(), 16, "{h}");
    assert_eq!(run(), h);
}

#[test]
fn bad_cpu_model_is_one_line() {
    for (spec, want) in [
        ("pentium", "unknown CPU model"),
        ("max,+sha-ni", "does not implement"),
        ("qemu64,vendor=via", "vendor"),
    ] {
        let (code, _, err) = ferrite(&["run", "--cpu", spec]);
        assert_eq!(code, 2, "{spec}");
        assert_eq!(err.trim_end().lines().count(), 1, "stderr: {err}");
        assert!(err.contains(want), "stderr: {err}");
    }
}

#[test]
fn unimplemented_instruction_is_ud_unless_strict() {
    // At the reset vector: XTEST (0F 01 D6), which Ferrite does not implement. By default it is #UD
    // through the IVT (all zeros: the handler runs zero bytes, ADD [BX+SI],AL, until the budget ends);
    // with --strict the machine stops and names the instruction.
    let mut rom = [0xf4u8; 4096];
    rom[0xff0..0xff3].copy_from_slice(&[0x0f, 0x01, 0xd6]);
    let p = std::env::temp_dir().join(format!("ferrite-cli-ud-{}.bin", std::process::id()));
    std::fs::write(&p, rom).unwrap();
    let rom_arg = p.to_str().unwrap();
    let (code, _, err) = ferrite(&["run", "--rom", rom_arg, "--max-instructions", "1000"]);
    assert_eq!(code, 124, "stderr: {err}");
    assert!(!err.contains("unimplemented"), "stderr: {err}");
    let (code, _, err) = ferrite(&["run", "--rom", rom_arg, "--strict", "--max-instructions", "1000"]);
    std::fs::remove_file(&p).unwrap();
    assert_ne!(code, 124, "stderr: {err}");
    assert!(err.contains("unimplemented instruction") && err.contains("Xtest"), "stderr: {err}");
}
