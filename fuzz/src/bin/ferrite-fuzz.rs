//! `ferrite-fuzz TARGET|all [--iterations N | --seconds S] [--seed S] [--out DIR]`, or
//! `ferrite-fuzz TARGET --replay FILE`: runs the fuzz targets with the stable-toolchain driver.

use ferrite_fuzz::driver::{self, Limit};
use ferrite_fuzz::{TARGETS, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> String {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    format!(
        "usage: ferrite-fuzz TARGET|all [--iterations N | --seconds S] [--seed S] [--out DIR]\n       ferrite-fuzz TARGET --replay FILE\ntargets: {}",
        names.join(" ")
    )
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrite-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut args = std::env::args().skip(1);
    let which = args.next().ok_or_else(usage)?;
    let mut limit = Limit::Iterations(10_000);
    let mut seed = 1u64;
    let mut out = PathBuf::from("target/fuzz-findings");
    let mut replay = None;
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |s: String, name: &str| s.parse::<u64>().map_err(|_| format!("{name}: not a number: {s}"));
        match a.as_str() {
            "--iterations" => limit = Limit::Iterations(num(val("--iterations")?, "--iterations")?),
            "--seconds" => limit = Limit::Time(Duration::from_secs(num(val("--seconds")?, "--seconds")?)),
            "--seed" => seed = num(val("--seed")?, "--seed")?,
            "--out" => out = PathBuf::from(val("--out")?),
            "--replay" => replay = Some(PathBuf::from(val("--replay")?)),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    let targets: Vec<&Target> = if which == "all" {
        TARGETS.iter().collect()
    } else {
        vec![ferrite_fuzz::target(&which).ok_or_else(|| format!("no target {which}\n{}", usage()))?]
    };
    if let Some(file) = replay {
        let input = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for t in targets {
            match driver::run_one(t, &input) {
                Ok(sig) => println!("{}: ok (signature {sig:#x})", t.name),
                Err(e) => {
                    println!("{}: FAILED: {e}", t.name);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for t in targets {
        match driver::fuzz(t, seed, limit) {
            Ok(s) => {
                if std::env::var_os("FERRITE_FUZZ_SAVE_SLOWEST").is_some() {
                    std::fs::create_dir_all(&out)
                        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
                    let path = out.join(format!("{}-seed{seed}-slowest.bin", t.name));
                    std::fs::write(&path, &s.slowest_input)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                }
                println!(
                    "{}: {} inputs, {} behaviours, corpus {}, slowest input {:.1} ms",
                    t.name,
                    s.runs,
                    s.signatures,
                    s.corpus,
                    s.slowest.as_secs_f64() * 1e3
                );
            }
            Err(f) => {
                std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
                let path = out.join(format!("{}-seed{seed}.bin", t.name));
                std::fs::write(&path, &f.input)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                println!("{}: FINDING (input saved to {}): {}", t.name, path.display(), f.message);
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
