//! `--jit-cache DIR` across processes: a second `ferrite run` of the same ROMs places every
//! translation from the cache (so the saved code runs at the addresses of another process, the
//! executable loaded elsewhere), compiles nothing, and ends exactly as the first run and as the
//! interpreter: the same exit status, debug-console output, instruction count and state hash.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    status: Option<i32>,
    stdout: String,
    icount: String,
    hash: String,
    stats: String,
}

fn ferrite(rom: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["run", "--rom"])
        .arg(rom)
        .args(["--memory", "32M", "--stats", "--max-instructions", "200000000"])
        .args(args)
        .output()
        .expect("run ferrite");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let field = |prefix: &str, pick: fn(&str) -> Option<String>| {
        stderr.lines().find(|l| l.starts_with(prefix)).and_then(pick).unwrap_or_else(|| {
            panic!("no `{prefix}` line in ferrite's stderr:\n{stderr}");
        })
    };
    let icount = field("ferrite: ", |l| {
        l.contains(" instructions in ").then(|| l.split_whitespace().nth(1).unwrap_or("").to_string())
    });
    let hash = field("ferrite: state hash ", |l| l.split_whitespace().nth(3).map(str::to_string));
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        icount,
        hash,
        stats: stderr.lines().find(|l| l.starts_with("ferrite: jit:")).unwrap_or("").to_string(),
    }
}

/// The number before `what` in the JIT's statistics line.
fn count(stats: &str, what: &str) -> u64 {
    let at = stats.find(what).unwrap_or_else(|| panic!("no `{what}` in {stats}"));
    stats[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before `{what}` in {stats}"))
}

#[test]
fn a_second_process_runs_the_roms_from_the_translation_cache() {
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("jit-cache-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let cache = tmp.join("cache");
    let cache_arg = cache.to_str().unwrap();
    for name in ["bench_int", "lm_arith", "chip_pit_pic", "pm_interrupts"] {
        let rom = tmp.join(format!("{name}.bin"));
        std::fs::write(&rom, test_roms::rom(name).expect("rom")).unwrap();
        let interp = ferrite(&rom, &["--accel", "interp"]);
        let jit = ["--accel", "jit", "--jit-threshold", "2", "--jit-cache", cache_arg];
        let first = ferrite(&rom, &jit);
        let second = ferrite(&rom, &jit);
        for (what, r) in [("first", &first), ("second", &second)] {
            assert_eq!(
                (r.status, &r.stdout, &r.icount, &r.hash),
                (interp.status, &interp.stdout, &interp.icount, &interp.hash),
                "{name}: {what} jit run differs from the interpreter; {}",
                r.stats
            );
        }
        let placed = count(&second.stats, "placed (");
        assert!(placed > 0, "{name}: nothing translated: {}", second.stats);
        assert_eq!(count(&second.stats, "from the cache"), placed, "{name}: {}", second.stats);
        assert_eq!(count(&second.stats, "compiled on the compile thread"), 0, "{name}: {}", second.stats);
        assert_eq!(count(&second.stats, "on the main thread"), 0, "{name}: {}", second.stats);
        println!("{name}: {}", second.stats);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
