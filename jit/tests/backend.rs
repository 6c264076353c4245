//! The machine's JIT backend (`jit::Backend`): translations from the compile thread, the persistent
//! cache and the bounded code arena must never change the guest's results. Each test runs a program
//! under the interpreter alone and under the backend and requires the same registers, RIP, RFLAGS,
//! retired count, exit and memory.

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, TestBus, TestMode, asm, cpu_in};
use iced_x86::code_asm::*;
use std::path::PathBuf;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    gpr: [u64; 16],
    rip: u64,
    rflags: u64,
    icount: u64,
    exit: Exit,
}

fn run(code: &[u8], it: &mut Interpreter, budget: u64) -> (Outcome, Vec<u8>) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    let exit = it.run(&mut st, &mut bus, budget);
    (Outcome { gpr: st.gpr, rip: st.rip, rflags: st.rflags, icount: st.icount, exit }, bus.ram)
}

fn reference(code: &[u8], budget: u64) -> (Outcome, Vec<u8>) {
    let (o, ram) = run(code, &mut Interpreter::new(), budget);
    assert_eq!(o.exit, Exit::Halted, "the program must end with HLT within the budget");
    (o, ram)
}

/// Runs `code` under a backend with `opts` (threshold 1) and returns the outcome and the counters.
/// With `pause_at`, the run stops there, waits for the compile thread to finish all it was given
/// (so that the rest of the run has translations whatever the host's load) and goes on.
fn under_paused(
    code: &[u8],
    budget: u64,
    opts: jit::Options,
    pause_at: Option<u64>,
) -> (Outcome, Vec<u8>, jit::Counters, String) {
    under_threshold(code, budget, jit::Options { threshold: 1, ..opts }, pause_at)
}

/// Runs `code` with the JIT backend at `opts.threshold`.
fn under_threshold(
    code: &[u8],
    budget: u64,
    opts: jit::Options,
    pause_at: Option<u64>,
) -> (Outcome, Vec<u8>, jit::Counters, String) {
    let threshold = opts.threshold;
    let backend = jit::Backend::new(opts).expect("backend");
    let mut it = Interpreter::new();
    // The interpreter owns the backend; the test reaches it through a second handle.
    let handle = backend.handle();
    it.set_backend(Box::new(backend), threshold);
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    if let Some(p) = pause_at {
        assert_eq!(it.run(&mut st, &mut bus, p), Exit::BudgetSpent);
        handle.finish_pending();
    }
    let exit = it.run(&mut st, &mut bus, budget);
    // What the compile thread still has is placed too (the counters then say what it did).
    handle.finish_pending();
    let o = Outcome { gpr: st.gpr, rip: st.rip, rflags: st.rflags, icount: st.icount, exit };
    let line = it.backend_stats().unwrap_or_default();
    (o, bus.ram, handle.counters(), line)
}

fn under(code: &[u8], budget: u64, opts: jit::Options) -> (Outcome, Vec<u8>, jit::Counters, String) {
    under_paused(code, budget, opts, None)
}

/// A loop over a dozen small functions: ALU, shifts and IMUL with live flags (helper calls),
/// loads and stores, handler calls (CPUID, PUSHF).
fn many_blocks() -> Vec<u8> {
    asm(64, |a| {
        let mut top = a.create_label();
        let mut funcs: Vec<CodeLabel> = (0..12).map(|_| a.create_label()).collect();
        a.mov(r15d, 300).unwrap();
        a.xor(ebx, ebx).unwrap();
        a.set_label(&mut top).unwrap();
        for f in &funcs {
            a.call(*f).unwrap();
        }
        a.dec(r15d).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
        for (k, f) in funcs.iter_mut().enumerate() {
            a.set_label(f).unwrap();
            a.add(rbx, k as i32 + 1).unwrap();
            a.rol(rbx, (k % 7 + 1) as u32).unwrap();
            a.pushfq().unwrap();
            a.pop(rax).unwrap();
            a.imul_3(rcx, rbx, 0x35 + k as i32).unwrap();
            a.adc(rbx, rcx).unwrap();
            a.mov(qword_ptr(0x10000 + 8 * k as u64), rbx).unwrap();
            a.add(rdx, qword_ptr(0x10000 + 8 * ((k + 5) % 12) as u64)).unwrap();
            if k % 4 == 0 {
                a.push(rbx).unwrap();
                a.mov(eax, 1).unwrap();
                a.cpuid().unwrap();
                a.pop(rbx).unwrap();
            }
            a.ret().unwrap();
        }
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cache_file(dir: &PathBuf) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "fjc"))
        .collect();
    assert_eq!(files.len(), 1, "one cache file per build: {files:?}");
    files[0].clone()
}

#[test]
fn translations_from_the_compile_thread_give_the_interpreters_results() {
    let code = many_blocks();
    let (want, want_ram) = reference(&code, 10_000_000);
    for (seed, max_us) in [(0, 0), (3, 100), (9, 2000)] {
        let delay = (max_us > 0).then_some(jit::CompileDelay { seed, max_us });
        let opts = jit::Options { delay, ..Default::default() };
        let (got, ram, c, line) = under_paused(&code, 10_000_000, opts, Some(want.icount / 3));
        assert_eq!(got, want, "delays up to {max_us} us");
        assert!(ram == want_ram, "memory differs (delays up to {max_us} us)");
        assert!(c.compiled_background >= 13, "the compile thread did not compile the loop: {line}");
        assert_eq!(c.compiled_foreground, 0, "{line}");
        println!("delays to {max_us:>4} us: {line}");
    }
}

#[test]
fn a_full_compile_queue_defers_blocks_instead_of_compiling_them_on_the_guests_thread() {
    let code = many_blocks();
    let (want, want_ram) = reference(&code, 10_000_000);
    // A queue of one job and a slow compile thread: nearly every request finds the queue full.
    let delay = Some(jit::CompileDelay { seed: 5, max_us: 3000 });
    let opts = jit::Options { delay, queue: 1, threshold: 2, ..Default::default() };
    let (got, ram, c, line) = under_threshold(&code, 10_000_000, opts, None);
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert!(c.deferred > 0, "no request was deferred: {line}");
    assert_eq!(c.compiled_foreground, 0, "a block was compiled on the guest's thread: {line}");
    assert!(c.compiled_background > 0, "{line}");
    println!("{line}");
}

/// Twelve small functions called twice each: with a threshold of 2 every block asks for a
/// translation once, and never again.
fn blocks_run_twice() -> Vec<u8> {
    asm(64, |a| {
        let mut top = a.create_label();
        let mut funcs: Vec<CodeLabel> = (0..12).map(|_| a.create_label()).collect();
        a.mov(r15d, 2).unwrap();
        a.set_label(&mut top).unwrap();
        for f in &funcs {
            a.call(*f).unwrap();
        }
        a.dec(r15d).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
        for (k, f) in funcs.iter_mut().enumerate() {
            a.set_label(f).unwrap();
            a.add(rbx, k as i32 + 1).unwrap();
            a.imul_3(rcx, rbx, 0x35 + k as i32).unwrap();
            a.mov(qword_ptr(0x10000 + 8 * k as u64), rcx).unwrap();
            a.ret().unwrap();
        }
    })
}

#[test]
fn blocks_deferred_by_a_full_queue_still_reach_the_persistent_cache() {
    let code = blocks_run_twice();
    let (want, want_ram) = reference(&code, 1_000_000);
    let dir = temp_dir("jit-cache-deferred");
    // A queue of one job and a slow compile thread: most requests are deferred, and no block
    // asks again (each runs twice). The run's end compiles and saves them all the same.
    let delay = Some(jit::CompileDelay { seed: 7, max_us: 3000 });
    let cached = Some(dir.clone());
    let opts = jit::Options { delay, queue: 1, threshold: 2, cache: cached.clone(), ..Default::default() };
    let (got, _, first, line) = under_threshold(&code, 1_000_000, opts, None);
    assert_eq!(got, want);
    assert!(first.deferred > 0, "no request was deferred: {line}");
    // A threshold no block reaches: only what the first run saved is translated.
    let opts = jit::Options { background: false, threshold: 1_000_000, cache: cached, ..Default::default() };
    let (got, ram, second, line2) = under_threshold(&code, 1_000_000, opts, None);
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert_eq!(second.early_hits, first.requested, "first run: {line}\nsecond run: {line2}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn code_decoded_again_after_an_invalidation_is_served_from_memory_without_a_cache_dir() {
    // A loop, then a store into its own page (which drops its decoded blocks and translations),
    // twice: the second pass decodes the same code again, and must not compile it again.
    let code = asm(64, |a| {
        let mut outer = a.create_label();
        let mut inner = a.create_label();
        let mut data = a.create_label();
        a.mov(r15d, 3).unwrap();
        a.set_label(&mut outer).unwrap();
        a.mov(ecx, 100).unwrap();
        a.set_label(&mut inner).unwrap();
        a.add(eax, ecx).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(inner).unwrap();
        a.mov(byte_ptr(data), r15b).unwrap();
        a.dec(r15d).unwrap();
        a.jnz(outer).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut data).unwrap();
        a.db(&[0]).unwrap();
    });
    let (want, want_ram) = reference(&code, 1_000_000);
    let opts = jit::Options { background: false, ..Default::default() };
    let (got, ram, c, line) = under(&code, 1_000_000, opts);
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert!(c.cache_hits >= 2, "the loop was compiled again: {line}");
    assert_eq!(c.compiled_foreground + c.cache_hits, c.requested, "{line}");
    assert!(line.contains("cache in memory"), "{line}");
    println!("{line}");
}

#[test]
fn a_cached_translation_is_used_from_a_blocks_second_entry() {
    let code = many_blocks();
    let (want, want_ram) = reference(&code, 10_000_000);
    let dir = temp_dir("jit-cache-early");
    let opts = |threshold| jit::Options {
        background: false,
        cache: Some(dir.clone()),
        threshold,
        ..Default::default()
    };
    // Fill the cache: every block is translated at its first entry.
    let (got, _, first, line) = under_threshold(&code, 10_000_000, opts(1), None);
    assert_eq!(got, want);
    assert!(first.cache_stored >= 13, "{line}");
    assert_eq!(first.early_hits, 0, "{line}");
    // A threshold no block reaches (the loop runs 300 times): only the early lookup translates.
    let (got, ram, second, line) = under_threshold(&code, 10_000_000, opts(1_000_000), None);
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert_eq!(second.requested, 0, "{line}");
    assert_eq!(second.compiled_foreground + second.compiled_background, 0, "{line}");
    assert!(second.early_hits >= 13, "the cached blocks were not found early: {line}");
    assert_eq!(second.cache_hits, second.early_hits, "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cache_serves_a_second_run_and_ignores_damaged_entries() {
    let code = many_blocks();
    let (want, want_ram) = reference(&code, 10_000_000);
    let dir = temp_dir("jit-cache");
    let opts = || jit::Options { background: false, cache: Some(dir.clone()), ..Default::default() };

    let (got, ram, first, line) = under(&code, 10_000_000, opts());
    assert_eq!(got, want);
    assert!(ram == want_ram);
    assert_eq!(first.cache_hits, 0, "{line}");
    assert!(first.cache_stored >= 13, "{line}");
    assert_eq!(first.cache_stored, first.compiled_foreground, "{line}");

    // A second run compiles nothing.
    let (got, ram, second, line) = under(&code, 10_000_000, opts());
    assert_eq!(got, want);
    assert!(ram == want_ram);
    assert_eq!(second.compiled_foreground + second.compiled_background, 0, "{line}");
    assert_eq!(second.cache_hits, first.cache_stored, "{line}");
    assert_eq!(second.cache_rejected, 0, "{line}");

    let file = cache_file(&dir);
    let good = std::fs::read(&file).unwrap();
    // Damage of each kind: a flipped byte in an entry's code, a truncated file, a header from
    // another version, garbage. Each is noticed, ignored, and the run is still exact.
    let mid = good.len() / 2;
    let mut flipped = good.clone();
    flipped[mid] ^= 0x01;
    let mut version = good.clone();
    version[8] ^= 0x7f;
    // The header's tag (bytes 16..24) names the build (its GNU build ID), the Cranelift settings
    // and the host: a file of another build under this name is stale.
    let mut build = good.clone();
    build[16] ^= 0x01;
    let damaged: [(&str, Vec<u8>); 5] = [
        ("flipped byte", flipped),
        ("truncated", good[..mid].to_vec()),
        ("other version", version),
        ("other build", build),
        ("garbage", vec![0x5a; 4096]),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&file, &bytes).unwrap();
        let (got, ram, c, line) = under(&code, 10_000_000, opts());
        assert_eq!(got, want, "{what}");
        assert!(ram == want_ram, "{what}: memory differs");
        assert_eq!(c.cache_rejected, 1, "{what}: {line}");
        assert!(c.cache_hits < first.cache_stored, "{what}: damaged entries were used: {line}");
        // What was missing was compiled and saved again; the file is whole again.
        let (got, _, c, line) = under(&code, 10_000_000, opts());
        assert_eq!(got, want, "{what}, after repair");
        assert_eq!((c.cache_rejected, c.cache_hits), (0, first.cache_stored), "{what}, after repair: {line}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_code_arena_is_bounded_and_evicts_under_a_code_generating_guest() {
    // Copies a 25-instruction template to 3000 fresh addresses, then calls each copy, twice over:
    // 3000 distinct blocks, about 1 MiB of translations, through a 256 KiB arena. (Copying first
    // keeps the copies off pages whose code was invalidated, which the SMC back-off would leave
    // interpreted.)
    const COPIES: u32 = 3000;
    const STUBS: u64 = 0x20000;
    let code = asm(64, |a| {
        let mut copy = a.create_label();
        let mut pass = a.create_label();
        let mut call = a.create_label();
        let mut tmpl = a.create_label();
        let mut tmpl_end = a.create_label();
        a.mov(r8, STUBS).unwrap();
        a.mov(r9d, COPIES).unwrap();
        a.xor(ebx, ebx).unwrap();
        a.set_label(&mut copy).unwrap();
        a.lea(rsi, ptr(tmpl)).unwrap();
        a.lea(rcx, ptr(tmpl_end)).unwrap();
        a.sub(rcx, rsi).unwrap();
        a.mov(rdi, r8).unwrap();
        a.rep().movsb().unwrap();
        a.add(r8, 128).unwrap();
        a.dec(r9d).unwrap();
        a.jnz(copy).unwrap();
        a.mov(r10d, 2).unwrap();
        a.set_label(&mut pass).unwrap();
        a.mov(r8, STUBS).unwrap();
        a.mov(r9d, COPIES).unwrap();
        a.set_label(&mut call).unwrap();
        a.mov(rcx, r9).unwrap();
        a.call(r8).unwrap();
        a.add(r8, 128).unwrap();
        a.dec(r9d).unwrap();
        a.jnz(call).unwrap();
        a.dec(r10d).unwrap();
        a.jnz(pass).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut tmpl).unwrap();
        for k in 0..6 {
            a.add(rbx, rcx).unwrap();
            a.rol(rbx, k + 1).unwrap();
            a.imul_3(rbx, rbx, 3).unwrap();
            a.xor(rbx, rcx).unwrap();
        }
        a.ret().unwrap();
        a.set_label(&mut tmpl_end).unwrap();
        a.int3().unwrap();
    });
    let (want, want_ram) = reference(&code, 50_000_000);
    let limit = 256 << 10;
    for background in [false, true] {
        // A queue that takes every block: on this guest, which runs each block twice, a deferred
        // request would never be made again, and the arena would not fill.
        let opts = jit::Options { background, code_limit: limit, queue: 4096, ..Default::default() };
        let (got, ram, c, line) = under(&code, 50_000_000, opts);
        assert_eq!(got, want, "background {background}");
        assert!(ram == want_ram, "memory differs (background {background})");
        assert!(c.evictions >= 2, "the arena never filled: {line}");
        assert!(
            c.peak_mapped <= limit as u64,
            "{} bytes mapped past the bound of {limit}: {line}",
            c.peak_mapped
        );
        println!("background {background}: {line}");
    }
}

/// A loop of four blocks (its body branches on the counter's low bit), whose even arm adds `step`:
/// a region of the whole body once hot.
fn two_armed_loop(step: i32) -> Vec<u8> {
    asm(64, |a| {
        let mut top = a.create_label();
        let mut even = a.create_label();
        let mut next = a.create_label();
        a.mov(ecx, 3000).unwrap();
        a.set_label(&mut top).unwrap();
        a.add(eax, ecx).unwrap();
        a.test(ecx, 1).unwrap();
        a.jz(even).unwrap();
        a.xor(ebx, eax).unwrap();
        a.jmp(next).unwrap();
        a.set_label(&mut even).unwrap();
        a.add(ebx, step).unwrap();
        a.set_label(&mut next).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
    })
}

/// Runs `code` under a backend translating every block at its first entry and regions after 20
/// cycles, and waits for everything (so that the cache holds it all).
fn with_regions(code: &[u8], opts: jit::Options) -> (Outcome, Vec<u8>, jit::Counters, String) {
    let backend = jit::Backend::new(jit::Options { threshold: 1, ..opts }).expect("backend");
    backend.set_region_threshold(20);
    let handle = backend.handle();
    let mut it = Interpreter::new();
    it.set_backend(Box::new(backend), 1);
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    // A pause after the loop's first iterations lets the compile thread catch up, whatever the
    // host's load.
    assert_eq!(it.run(&mut st, &mut bus, 200), Exit::BudgetSpent);
    handle.finish_pending();
    let exit = it.run(&mut st, &mut bus, 1_000_000);
    handle.finish_pending();
    let o = Outcome { gpr: st.gpr, rip: st.rip, rflags: st.rflags, icount: st.icount, exit };
    let line = it.backend_stats().unwrap_or_default();
    (o, bus.ram, handle.counters(), line)
}

/// The entries of a cache file as (offset, kind, key length, code length).
fn cache_entries(bytes: &[u8]) -> Vec<(usize, u32, usize, usize)> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24;
    while at + 24 <= bytes.len() {
        let (klen, clen) = (u32_at(at + 4) as usize, u32_at(at + 8) as usize);
        out.push((at, u32_at(at + 12), klen, clen));
        at += 24 + klen + clen;
    }
    out
}

#[test]
fn regions_are_saved_and_placed_from_the_cache_and_stale_or_damaged_ones_are_not() {
    let code = two_armed_loop(3);
    let (want, want_ram) = reference(&code, 1_000_000);
    let dir = temp_dir("jit-cache-regions");
    // A region compiled on the compile thread is saved as well.
    let opts = |background| jit::Options { background, cache: Some(dir.clone()), ..Default::default() };
    let (got, ram, first, line) = with_regions(&code, opts(true));
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert_eq!((first.regions_compiled, first.regions_saved), (1, 0), "{line}");
    let saved = cache_entries(&std::fs::read(cache_file(&dir)).unwrap());
    assert_eq!(saved.iter().filter(|e| e.1 == 1).count(), 1, "one region saved: {saved:?}");
    // The next run, compiling on the main thread, starts its chains elsewhere: the region's head
    // is another of its members, which the saved code is entered at.
    let (got, ram, second, line) = with_regions(&code, opts(false));
    assert_eq!(got, want, "a saved region entered at another member");
    assert!(ram == want_ram, "memory differs");
    assert_eq!((second.regions_compiled, second.regions_saved), (0, 1), "{line}");
    // On the main thread both runs start their chains at the same block: the second places the
    // saved region, compiles nothing, and the result is the same.
    let _ = std::fs::remove_dir_all(&dir);
    let (got, ram, first, line) = with_regions(&code, opts(false));
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert_eq!((first.regions_compiled, first.regions_saved), (1, 0), "{line}");
    let (got, ram, second, line) = with_regions(&code, opts(false));
    assert_eq!(got, want, "from the cache");
    assert!(ram == want_ram, "memory differs");
    assert_eq!((second.regions_compiled, second.regions_saved), (0, 1), "{line}");
    assert_eq!(second.compiled_foreground + second.compiled_background, 0, "{line}");
    assert_eq!(second.cache_rejected, 0, "{line}");
    // Stale: the same loop with another immediate in one arm. The head and two members have the
    // keys of the saved region's, the fourth does not: the saved region is never placed.
    let other = two_armed_loop(5);
    let (want5, want5_ram) = reference(&other, 1_000_000);
    assert_ne!(want5.gpr, want.gpr);
    let (got, ram, c, line) = with_regions(&other, opts(false));
    assert_eq!(got, want5, "a stale region");
    assert!(ram == want5_ram, "memory differs");
    assert_eq!((c.regions_compiled, c.regions_saved), (1, 0), "{line}");
    // Damaged: a byte of the first region entry's code: rejected with a warning, never placed; the
    // run is exact and compiles it again.
    let file = cache_file(&dir);
    let mut bytes = std::fs::read(&file).unwrap();
    let entries = cache_entries(&bytes);
    assert_eq!(entries.iter().filter(|e| e.1 == 1).count(), 2, "two regions saved: {entries:?}");
    let &(at, _, klen, clen) = entries.iter().find(|e| e.1 == 1).unwrap();
    bytes[at + 24 + klen + clen / 2] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let (got, ram, c, line) = with_regions(&code, opts(false));
    assert_eq!(got, want, "a damaged region entry");
    assert!(ram == want_ram, "memory differs");
    assert_eq!(c.cache_rejected, 1, "{line}");
    assert_eq!(c.regions_saved, 0, "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn warm_blocks_are_compiled_in_idle_time_and_placed_early_in_the_next_run() {
    // Every block of the loop runs 300 times, below the threshold of 1000: before warm blocks,
    // none was ever translated.
    let code = many_blocks();
    let (want, want_ram) = reference(&code, 10_000_000);
    let dir = temp_dir("jit-cache-warm");
    let opts = || jit::Options { threshold: 1000, warm: 32, cache: Some(dir.clone()), ..Default::default() };
    let (got, ram, first, line) = under_threshold(&code, 10_000_000, opts(), None);
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert_eq!(first.requested, 0, "{line}");
    assert!(first.warm_queued >= 13, "the loop's blocks were not queued as warm: {line}");
    assert_eq!(first.compiled_background, first.warm_queued, "{line}");
    assert_eq!(first.cache_stored, first.warm_queued, "{line}");
    // The next run finds them at their second entry and compiles nothing.
    let (got, ram, second, line) = under_threshold(&code, 10_000_000, opts(), None);
    assert_eq!(got, want);
    assert!(ram == want_ram, "memory differs");
    assert_eq!(second.compiled_background + second.compiled_foreground + second.warm_queued, 0, "{line}");
    assert_eq!(second.early_hits, first.warm_queued, "{line}");
    // Off, or without a persistent cache: nothing is queued.
    let _ = std::fs::remove_dir_all(&dir);
    let (got, _, off, line) = under_threshold(&code, 10_000_000, jit::Options { warm: 0, ..opts() }, None);
    assert_eq!(got, want);
    assert_eq!((off.warm_queued, off.cache_stored), (0, 0), "{line}");
    let (got, _, off, line) =
        under_threshold(&code, 10_000_000, jit::Options { cache: None, ..opts() }, None);
    assert_eq!(got, want);
    assert_eq!((off.warm_queued, off.compiled_background), (0, 0), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
