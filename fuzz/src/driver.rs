//! A seeded mutation fuzzer: a corpus of generated seeds, grown with every mutant whose behaviour
//! signature is new; each input runs under `catch_unwind`, so a panic is reported with its input.

use crate::Target;
use crate::rng::Rng;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// How long a run goes on.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// This many inputs.
    Iterations(u64),
    /// Until this much host time has passed (for long runs by hand; CI uses iterations).
    Time(Duration),
}

/// A broken property or a panic, with the input that shows it.
#[derive(Debug)]
pub struct Finding {
    /// The input.
    pub input: Vec<u8>,
    /// What went wrong.
    pub message: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inputs run.
    pub runs: u64,
    /// Distinct behaviour signatures seen.
    pub signatures: usize,
    /// Corpus size at the end.
    pub corpus: usize,
    /// The slowest single input, in host time (a hang would show here).
    pub slowest: Duration,
    /// That input.
    pub slowest_input: Vec<u8>,
}

/// Runs `input` on `t`, turning a panic into a finding.
pub fn run_one(t: &Target, input: &[u8]) -> Result<u64, String> {
    match catch_unwind(AssertUnwindSafe(|| (t.run)(input))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(format!("panic: {msg}"))
        }
    }
}

fn mutate(r: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    const INTERESTING: &[u8] = &[0x00, 0x01, 0x7f, 0x80, 0xff, 0x0f, 0x66, 0xf3, 0xcd, 0xcc, 0xc3];
    for _ in 0..=r.below(4) {
        let len = input.len();
        match r.below(7) {
            0 if len > 0 => {
                let i = r.below(len);
                input[i] ^= 1 << r.below(8);
            }
            1 if len > 0 => {
                let i = r.below(len);
                input[i] = INTERESTING[r.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = r.below(len);
                input[i] = r.byte();
            }
            3 if len < 16384 => {
                let i = r.below(len + 1);
                let n = 1 + r.below(16);
                let bytes = r.bytes(n);
                input.splice(i..i, bytes);
            }
            4 if len > 1 => {
                let i = r.below(len);
                let n = 1 + r.below((len - i).min(16));
                input.drain(i..i + n);
            }
            5 if !corpus.is_empty() => {
                // Splice a piece of another corpus entry in.
                let other = &corpus[r.below(corpus.len())];
                if !other.is_empty() && len > 0 {
                    let from = r.below(other.len());
                    let n = 1 + r.below((other.len() - from).min(64));
                    let at = r.below(len);
                    let end = (at + n).min(len);
                    input.splice(at..end, other[from..from + (end - at)].iter().copied());
                }
            }
            6 if len >= 4 => {
                // A little-endian boundary value over four bytes.
                let i = r.below(len - 3);
                let v = [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX, 0x1000, 0xfff][r.below(7)];
                input[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => input.push(r.byte()),
        }
    }
}

/// Fuzzes `t` from `seed` until `limit`; stops at the first finding.
pub fn fuzz(t: &Target, seed: u64, limit: Limit) -> Result<Stats, Finding> {
    let mut r = Rng::new(seed);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let mut stats = Stats::default();
    let start = Instant::now();
    loop {
        match limit {
            Limit::Iterations(n) if stats.runs >= n => break,
            Limit::Time(d) if start.elapsed() >= d => break,
            _ => {}
        }
        // A fresh seed one time in eight (and until the corpus has a few entries), else a mutant.
        let input = if corpus.len() < 8 || r.below(8) == 0 {
            (t.seed)(&mut r)
        } else {
            let mut m = corpus[r.below(corpus.len())].clone();
            mutate(&mut r, &corpus, &mut m);
            m
        };
        let t0 = Instant::now();
        let result = run_one(t, &input);
        if t0.elapsed() > stats.slowest {
            stats.slowest = t0.elapsed();
            stats.slowest_input = input.clone();
        }
        stats.runs += 1;
        match result {
            Ok(sig) => {
                if seen.insert(sig) && corpus.len() < 4096 {
                    corpus.push(input);
                }
            }
            Err(message) => return Err(Finding { input, message }),
        }
    }
    stats.signatures = seen.len();
    stats.corpus = corpus.len();
    Ok(stats)
}
