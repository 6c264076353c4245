//! The native oracle: runs cases on the host CPU inside a forked, sandboxed child process.
//!
//! # Layout inside the child
//!
//! * `TRAMP_ADDR` (one page, R+X): two entry trampolines and a return stub, hand-assembled below.
//! * `STATE_ADDR` (one page, R+W): the state block (initial registers, jump target, saved host registers,
//!   results written by the signal handler).
//! * The case's code pages (R+X, rest of the pages filled with `int3`) and data regions (R+W), mapped with
//!   `MAP_FIXED_NOREPLACE` at the addresses the case asks for.
//!
//! # Entering and leaving the sequence
//!
//! The harness calls the entry trampoline as an ordinary `sysv64` function. It saves the callee-saved
//! registers and RSP into the state block, restores the case's x87/SSE state with `fxrstor64` from the state
//! block, loads DS and ES with `__USER_DS` (0x2b; a 64-bit process runs with
//! null DS/ES, which would make every DS/ES access #GP in compatibility mode), points RSP at the saved RFLAGS
//! image and executes `popfq`, loads
//! all sixteen GPRs with absolute `mov r64, [disp32]` loads (which do not touch flags), and then:
//!
//! * 64-bit mode: `jmp qword [disp32]` to the case's RIP;
//! * compatibility mode: `jmp fword [disp32]` through a `m16:32` far pointer `0x23:rip`. Selector 0x23 is
//!   Linux's `__USER32_CS`, a 32-bit code segment in the GDT, so the CPU switches to compatibility mode.
//!
//! The sequence ends at an `int3` (the page filler byte at `code_end`), or earlier at a fault. Either way the
//! kernel delivers a signal (SIGTRAP, SIGSEGV, SIGBUS, SIGILL or SIGFPE) to a 64-bit `SA_SIGINFO` handler on
//! an alternate signal stack, even when the CPU was in compatibility mode. The handler copies the register
//! state, `trapno` (vector), `err` (error code), CR2 and the FXSAVE image of the FP state
//! (`uc_mcontext.fpregs`) out of the `ucontext`, resets the frame's FCW/FSW/FTW/MXCSR, then rewrites the context to
//! continue at the return stub with CS = 0x33 (64-bit) and RFLAGS = 0x202. The kernel's `rt_sigreturn` then
//! loads that context, the stub restores the saved host registers and returns to the harness. No
//! `setjmp`/`longjmp` is involved.
//!
//! # Sandboxing
//!
//! All of that happens in a child created with `fork()` per [`NativeEngine`] (re-created if it dies). The
//! child performs only system calls and raw memory copies (no allocation, no locks), so forking from a
//! multi-threaded test process is safe. Cases and outcomes travel through a `MAP_SHARED` anonymous mapping;
//! one byte over a pipe says "go", one byte back says "done". If the child dies or does not answer within
//! [`CASE_TIMEOUT_MS`], the parent reaps it, returns [`Outcome::HarnessError`] for that case and starts a new
//! child for the next one. A signal whose RIP is not inside the sandboxed code makes the child die with the
//! default action instead of looping.

use crate::case::Engine;
use crate::case::{
    Case, ExceptionInfo, FinalState, MAX_CODE_LEN, MAX_DATA_LEN, MAX_REGIONS, MemRegion, Mode, Outcome,
    PAGE_SIZE, RESERVED_RANGE, RFLAGS_RF,
};
use std::ptr;

/// How long the parent waits for one case before declaring the child hung.
pub const CASE_TIMEOUT_MS: u64 = 5000;

const TRAMP_ADDR: u64 = RESERVED_RANGE.start;
const STATE_ADDR: u64 = RESERVED_RANGE.start + 0x1_0000;
const ALTSTACK_SIZE: usize = 64 * 1024;

// Offsets inside the state block.
const ST_GPRS: u64 = 0x000; // 16 x u64 initial GPRs
const ST_RFLAGS: u64 = 0x080; // initial RFLAGS (popfq reads it)
const ST_JMP64: u64 = 0x088; // u64 target for jmp qword [..]
const ST_JMPFAR: u64 = 0x090; // m16:32 far pointer (offset32, selector16)
const ST_SAVE: u64 = 0x0A0; // rbx rbp r12 r13 r14 r15 rsp
const ST_OUT_GPRS: u64 = 0x100; // 16 x u64
const ST_OUT_RIP: u64 = 0x180;
const ST_OUT_RFLAGS: u64 = 0x188;
const ST_OUT_TRAPNO: u64 = 0x190;
const ST_OUT_ERR: u64 = 0x198;
const ST_OUT_SIGNO: u64 = 0x1A0;
const ST_OUT_CR2: u64 = 0x1A8;
const ST_OUT_CS: u64 = 0x1B0;
const ST_ACTIVE: u64 = 0x1B8; // 1 while the sandboxed code runs
const ST_SANDBOX_LO: u64 = 0x1C0; // code pages range accepted as "inside the sandbox"
const ST_SANDBOX_HI: u64 = 0x1C8;
const ST_RET_STUB: u64 = 0x1D0;
const ST_ENTRY32: u64 = 0x1D8;
const ST_FSBASE: u64 = 0x1E0; // the child's FS base (glibc's TLS), restored after every case
const ST_FXIN: u64 = 0x200; // 512-byte FXRSTOR image (16-byte aligned)
const ST_FXOUT: u64 = 0x400; // 512-byte FXSAVE image copied out of the signal frame
const FX_SIZE: usize = 512;
const ST_YMMIN: u64 = 0x600; // 16 x 16 bytes: bits 255:128 of YMM0-15 loaded at entry
const ST_YMMOUT: u64 = 0x700; // 16 x 16 bytes: the same copied out of the signal frame
const YMM_SIZE: usize = 256;
/// Offset of the AVX component (YMM_Hi128) in the standard-format XSAVE area of a signal frame
/// (CPUID.(EAX=0DH,ECX=2):EBX on every CPU with AVX).
const XSAVE_YMM_OFFSET: usize = 576;
/// `fpx_sw_bytes.magic1` at byte 464 of the frame's FP area when it holds an XSAVE image.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;

/// Whether this host runs AVX instructions (CPU and OS): the native engine then loads and reports the
/// YMM upper halves, and the interpreter engine runs with CR4.OSXSAVE = 1 and XCR0 = 7 as Linux does.
pub fn host_avx() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

const USER_CS64: u64 = 0x33;
/// arch_prctl codes (asm/prctl.h).
const ARCH_SET_FS: libc::c_int = 0x1002;
const ARCH_GET_FS: libc::c_int = 0x1003;
const USER_CS32: u64 = 0x23;

// Shared-memory layout between parent and child.
const SHM_HDR: usize = 0;
const SHM_CODE: usize = 4096;
const SHM_DATA: usize = SHM_CODE + 4096;
const SHM_SIZE: usize = SHM_DATA + MAX_DATA_LEN;

/// Case header and result, as stored in shared memory.
#[repr(C)]
#[derive(Clone, Copy)]
struct ShmHeader {
    mode: u32,
    code_len: u32,
    nregions: u32,
    status: u32,
    code_addr: u64,
    regs_in: [u64; 16],
    rip_in: u64,
    rflags_in: u64,
    regions: [[u64; 2]; MAX_REGIONS],
    // Results.
    regs_out: [u64; 16],
    rip_out: u64,
    rflags_out: u64,
    trapno: u64,
    err: u64,
    signo: u64,
    cr2: u64,
    cs: u64,
    fp_in: [u8; FX_SIZE],
    fp_out: [u8; FX_SIZE],
    ymm_in: [u8; YMM_SIZE],
    ymm_out: [u8; YMM_SIZE],
}

const STATUS_OK: u32 = 0;
const STATUS_MAP_FAILED: u32 = 1;
const STATUS_NO_SIGNAL: u32 = 2;

/// Entry points inside the trampoline page.
struct Trampoline {
    bytes: Vec<u8>,
    entry32: u64,
    ret_stub: u64,
}

fn rex_w(reg: u8) -> u8 {
    0x48 | ((reg >> 3) << 2)
}

/// `mov [disp32], r64` (absolute, SIB without base/index).
fn store_abs(out: &mut Vec<u8>, reg: u8, addr: u64) {
    out.extend_from_slice(&[rex_w(reg), 0x89, ((reg & 7) << 3) | 4, 0x25]);
    out.extend_from_slice(&(addr as u32).to_le_bytes());
}

/// `mov r64, [disp32]`.
fn load_abs(out: &mut Vec<u8>, reg: u8, addr: u64) {
    out.extend_from_slice(&[rex_w(reg), 0x8B, ((reg & 7) << 3) | 4, 0x25]);
    out.extend_from_slice(&(addr as u32).to_le_bytes());
}

const SAVED_REGS: [u8; 7] = [3, 5, 12, 13, 14, 15, 4]; // rbx rbp r12 r13 r14 r15 rsp

fn entry_prologue(out: &mut Vec<u8>) {
    for (i, &r) in SAVED_REGS.iter().enumerate() {
        store_abs(out, r, STATE_ADDR + ST_SAVE + 8 * i as u64);
    }
    // DS = ES = __USER_DS (0x2b). A 64-bit Linux process runs with null DS/ES, which is fine in 64-bit mode
    // but makes every DS/ES access #GP in compatibility mode. mov eax, 0x2b; mov ds, eax; mov es, eax
    out.extend_from_slice(&[0xB8, 0x2B, 0, 0, 0, 0x8E, 0xD8, 0x8E, 0xC0]);
    // fxrstor64 [disp32]: the case's x87/SSE state (the harness's own state comes back from the signal frame,
    // which the handler resets to the ABI's initial control words).
    out.extend_from_slice(&[0x48, 0x0F, 0xAE, 0x0C, 0x25]);
    out.extend_from_slice(&((STATE_ADDR + ST_FXIN) as u32).to_le_bytes());
    if host_avx() {
        load_ymm_upper(out);
    }
    // mov rsp, imm32 (sign-extended; the address is below 2 GiB)
    out.extend_from_slice(&[0x48, 0xC7, 0xC4]);
    out.extend_from_slice(&((STATE_ADDR + ST_RFLAGS) as u32).to_le_bytes());
    out.push(0x9D); // popfq
    for r in 0..16u8 {
        load_abs(out, r, STATE_ADDR + ST_GPRS + 8 * r as u64);
    }
}

/// `vinserti128 ymmN, ymmN, [disp32], 1` for N = 0..15: bits 255:128 of every YMM register from the
/// state block (VEX.256.66.0F3A.W0 38 /r ib, three-byte VEX form).
fn load_ymm_upper(out: &mut Vec<u8>) {
    for r in 0..16u8 {
        let nr = !r & 15;
        out.push(0xC4);
        out.push(((nr >> 3) << 7) | 0x60 | 0x03); // R̄, X̄ = 1, B̄ = 1, map 0F3A
        out.push((nr << 3) | 0x04 | 0x01); // W0, vvvv = N̄, L = 1, pp = 66
        out.push(0x38);
        out.push(((r & 7) << 3) | 4);
        out.push(0x25);
        out.extend_from_slice(&((STATE_ADDR + ST_YMMIN + 16 * r as u64) as u32).to_le_bytes());
        out.push(1);
    }
}

/// Builds the trampoline page contents (addresses fixed at `TRAMP_ADDR`).
fn build_trampoline() -> Trampoline {
    let mut b = Vec::new();
    entry_prologue(&mut b);
    // jmp qword [disp32]
    b.extend_from_slice(&[0xFF, 0x24, 0x25]);
    b.extend_from_slice(&((STATE_ADDR + ST_JMP64) as u32).to_le_bytes());
    b.push(0xCC);
    let entry32 = TRAMP_ADDR + b.len() as u64;
    entry_prologue(&mut b);
    // jmp fword [disp32]  (FF /5, m16:32)
    b.extend_from_slice(&[0xFF, 0x2C, 0x25]);
    b.extend_from_slice(&((STATE_ADDR + ST_JMPFAR) as u32).to_le_bytes());
    b.push(0xCC);
    let ret_stub = TRAMP_ADDR + b.len() as u64;
    // Restore rsp first (index 6), then the callee-saved registers, then return to the harness.
    load_abs(&mut b, 4, STATE_ADDR + ST_SAVE + 8 * 6);
    for (i, &r) in SAVED_REGS[..6].iter().enumerate() {
        load_abs(&mut b, r, STATE_ADDR + ST_SAVE + 8 * i as u64);
    }
    b.push(0xC3); // ret
    Trampoline { bytes: b, entry32, ret_stub }
}

/// Disassembles the trampoline (for tests and debugging).
pub fn trampoline_listing() -> String {
    let t = build_trampoline();
    crate::disasm::disassemble(&t.bytes, TRAMP_ADDR, 64)
}

struct Child {
    pid: libc::pid_t,
    cmd_fd: libc::c_int,
    res_fd: libc::c_int,
}

/// Runs cases on the host CPU (see the module documentation).
pub struct NativeEngine {
    shm: *mut u8,
    child: Option<Child>,
    tramp: Trampoline,
    /// Number of child processes started so far (1 + restarts).
    pub children_started: u64,
    /// Per-case timeout in milliseconds (default [`CASE_TIMEOUT_MS`]).
    pub timeout_ms: u64,
}

// SAFETY: the raw pointer is a private shared mapping owned by this engine; nothing else aliases it in the
// parent, so moving the engine to another thread is sound.
unsafe impl Send for NativeEngine {}

impl Default for NativeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeEngine {
    /// Creates the engine (the child is started lazily on the first case).
    pub fn new() -> Self {
        // SAFETY: anonymous shared mapping with no address hint; the result is checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                SHM_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of the shared case buffer failed");
        NativeEngine {
            shm: p as *mut u8,
            child: None,
            tramp: build_trampoline(),
            children_started: 0,
            timeout_ms: CASE_TIMEOUT_MS,
        }
    }

    fn header(&mut self) -> *mut ShmHeader {
        // SAFETY: SHM_HDR is inside the mapping, which is page-aligned and large enough for the header.
        unsafe { self.shm.add(SHM_HDR) as *mut ShmHeader }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = [0 as libc::c_int; 2];
        let mut res = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two fds into the arrays we pass.
        if unsafe { libc::pipe2(cmd.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err("pipe2 failed".into());
        }
        // SAFETY: as above.
        if unsafe { libc::pipe2(res.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            // SAFETY: closing the fds we just created.
            unsafe {
                libc::close(cmd[0]);
                libc::close(cmd[1]);
            }
            return Err("pipe2 failed".into());
        }
        let tramp_ptr = self.tramp.bytes.as_ptr();
        let tramp_len = self.tramp.bytes.len();
        let ret_stub = self.tramp.ret_stub;
        let entry32 = self.tramp.entry32;
        let shm = self.shm;
        // SAFETY: fork in a possibly multi-threaded process: the child only runs `child_main`, which performs
        // raw system calls and memory copies (async-signal-safe), never allocates, and ends with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err("fork failed".into());
        }
        if pid == 0 {
            // SAFETY: we are the freshly forked child; the arguments point to memory inherited from the parent
            // (trampoline bytes, shared buffer) that stays valid because nothing in the child frees it.
            unsafe { child_main(cmd[0], res[1], shm, tramp_ptr, tramp_len, ret_stub, entry32) }
        }
        // SAFETY: closing the child's ends in the parent.
        unsafe {
            libc::close(cmd[0]);
            libc::close(res[1]);
        }
        self.child = Some(Child { pid, cmd_fd: cmd[1], res_fd: res[0] });
        self.children_started += 1;
        Ok(())
    }

    fn kill_child(&mut self) -> Option<String> {
        let c = self.child.take()?;
        let mut status = 0;
        // SAFETY: pid is our own child (not yet reaped); fds are ours.
        unsafe {
            libc::kill(c.pid, libc::SIGKILL);
            libc::waitpid(c.pid, &mut status, 0);
            libc::close(c.cmd_fd);
            libc::close(c.res_fd);
        }
        Some(describe_status(status))
    }

    /// Waits for the child's "done" byte. Err(description) if it died or hung.
    fn wait_done(&mut self) -> Result<(), String> {
        let Some(c) = &self.child else { return Err("no child".into()) };
        let (pid, res_fd) = (c.pid, c.res_fd);
        let mut waited = 0u64;
        loop {
            let mut pfd = libc::pollfd { fd: res_fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, 50) };
            if n > 0 {
                let mut b = 0u8;
                // SAFETY: reading one byte into a local.
                let r = unsafe { libc::read(res_fd, &mut b as *mut u8 as *mut libc::c_void, 1) };
                if r == 1 {
                    return Ok(());
                }
                let why = self.kill_child().unwrap_or_default();
                return Err(format!("native child died ({why})"));
            }
            waited += 50;
            let mut status = 0;
            // SAFETY: non-blocking wait on our own child.
            let w = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if w == pid {
                if let Some(c) = self.child.take() {
                    // SAFETY: closing our fds; the child is already reaped.
                    unsafe {
                        libc::close(c.cmd_fd);
                        libc::close(c.res_fd);
                    }
                }
                return Err(format!("native child died ({})", describe_status(status)));
            }
            if waited >= self.timeout_ms {
                self.kill_child();
                return Err(format!("native child timed out after {} ms", self.timeout_ms));
            }
        }
    }

    fn run_checked(&mut self, case: &Case) -> Outcome {
        if let Err(e) = case.validate() {
            return Outcome::HarnessError(format!("invalid case: {e}"));
        }
        if self.child.is_none()
            && let Err(e) = self.spawn()
        {
            return Outcome::HarnessError(e);
        }
        // Fill the shared buffer.
        let h = self.header();
        let mut hdr = ShmHeader {
            mode: (case.mode == Mode::Compat32) as u32,
            code_len: case.code.len() as u32,
            nregions: case.data.len() as u32,
            status: u32::MAX,
            code_addr: case.code_addr,
            regs_in: case.regs.gprs,
            rip_in: case.regs.rip,
            rflags_in: case.regs.rflags,
            regions: [[0; 2]; MAX_REGIONS],
            regs_out: [0; 16],
            rip_out: 0,
            rflags_out: 0,
            trapno: 0,
            err: 0,
            signo: 0,
            cr2: 0,
            cs: 0,
            fp_in: case.fp.unwrap_or_default().to_fxsave(),
            fp_out: [0; FX_SIZE],
            ymm_in: [0; YMM_SIZE],
            ymm_out: [0; YMM_SIZE],
        };
        for (i, x) in case.fp.unwrap_or_default().ymm_hi.iter().enumerate() {
            hdr.ymm_in[16 * i..16 * i + 16].copy_from_slice(&x.to_le_bytes());
        }
        for (i, r) in case.data.iter().enumerate() {
            hdr.regions[i] = [r.addr, r.bytes.len() as u64];
        }
        // SAFETY: header, code and data areas are inside the shared mapping; lengths were validated
        // (code <= MAX_CODE_LEN < 4096, total data <= MAX_DATA_LEN); the child is idle (waiting for a command).
        unsafe {
            ptr::write_volatile(h, hdr);
            ptr::copy_nonoverlapping(case.code.as_ptr(), self.shm.add(SHM_CODE), case.code.len());
            let mut off = SHM_DATA;
            for r in &case.data {
                ptr::copy_nonoverlapping(r.bytes.as_ptr(), self.shm.add(off), r.bytes.len());
                off += r.bytes.len();
            }
        }
        let cmd_fd = self.child.as_ref().map(|c| c.cmd_fd).unwrap_or(-1);
        let go = 1u8;
        // SAFETY: writing one byte from a local to our pipe.
        let w = unsafe { libc::write(cmd_fd, &go as *const u8 as *const libc::c_void, 1) };
        if w != 1 {
            let why = self.kill_child().unwrap_or_default();
            return Outcome::HarnessError(format!("native child not accepting work ({why})"));
        }
        if let Err(e) = self.wait_done() {
            return Outcome::HarnessError(e);
        }
        // SAFETY: the child has finished writing (it signalled through the pipe) and waits for the next command.
        let out = unsafe { ptr::read_volatile(h) };
        match out.status {
            STATUS_OK => {}
            STATUS_MAP_FAILED => {
                return Outcome::HarnessError("native: could not map the case's pages".into());
            }
            STATUS_NO_SIGNAL => return Outcome::HarnessError("native: returned without a signal".into()),
            s => return Outcome::HarnessError(format!("native: bad status {s}")),
        }
        let mut data = Vec::with_capacity(case.data.len());
        let mut off = SHM_DATA;
        for r in &case.data {
            let mut bytes = vec![0u8; r.bytes.len()];
            // SAFETY: same area we filled above, now holding the final bytes.
            unsafe { ptr::copy_nonoverlapping(self.shm.add(off), bytes.as_mut_ptr(), bytes.len()) };
            off += bytes.len();
            data.push(MemRegion { addr: r.addr, bytes });
        }
        decode_result(case, &out, data)
    }
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else if libc::WIFEXITED(status) {
        format!("exited with {}", libc::WEXITSTATUS(status))
    } else {
        format!("status {status:#x}")
    }
}

/// Turns the raw signal information into an [`Outcome`].
fn decode_result(case: &Case, out: &ShmHeader, data: Vec<MemRegion>) -> Outcome {
    let mut gprs = out.regs_out;
    let mut rip = out.rip_out;
    let rflags = out.rflags_out & !RFLAGS_RF;
    let expected_cs = if case.mode == Mode::Compat32 { USER_CS32 } else { USER_CS64 };
    if out.cs & 0xFFFF != expected_cs {
        return Outcome::HarnessError(format!(
            "native: signal with CS {:#x}, expected {expected_cs:#x}",
            out.cs
        ));
    }
    if case.mode == Mode::Compat32 {
        for g in gprs[..8].iter_mut() {
            *g &= 0xFFFF_FFFF;
        }
        for g in gprs[8..].iter_mut() {
            *g = 0;
        }
        rip &= 0xFFFF_FFFF;
    }
    let fp = case.fp.map(|_| {
        let mut ymm_hi = [0u128; 16];
        for (i, y) in ymm_hi.iter_mut().enumerate() {
            *y = u128::from_le_bytes(out.ymm_out[16 * i..16 * i + 16].try_into().expect("16 bytes"));
        }
        crate::case::FpState { ymm_hi, ..crate::case::FpState::from_fxsave(&out.fp_out) }
    });
    let vector = out.trapno as u8;
    let signo = out.signo as libc::c_int;
    if signo == libc::SIGTRAP && vector == 3 && rip == case.code_end() + 1 {
        return Outcome::Ran(FinalState { gprs, rip: case.code_end(), rflags, data, exception: None, fp });
    }
    let error_code = match vector {
        8 | 10 | 11 | 12 | 13 | 14 | 17 => Some(out.err),
        _ => None,
    };
    let fault_addr = if vector == 14 { Some(out.cr2) } else { None };
    let exception = Some(ExceptionInfo { vector, error_code, rip, fault_addr });
    Outcome::Ran(FinalState { gprs, rip, rflags, data, exception, fp })
}

impl Engine for NativeEngine {
    fn name(&self) -> &str {
        "native"
    }

    fn run(&mut self, case: &Case) -> Outcome {
        self.run_checked(case)
    }
}

impl Drop for NativeEngine {
    fn drop(&mut self) {
        self.kill_child();
        // SAFETY: unmapping the shared buffer we mapped in `new`; no references into it remain.
        unsafe { libc::munmap(self.shm as *mut libc::c_void, SHM_SIZE) };
    }
}

// ---------------------------------------------------------------------------------------------------------
// Child side. Everything below runs in the forked child and must stay allocation-free.

/// Pointer to a u64 field of the state block.
fn st(off: u64) -> *mut u64 {
    (STATE_ADDR + off) as *mut u64
}

/// Maps `len` bytes at `addr` (fixed, without replacing anything) read+write.
///
/// # Safety
/// Must only be called in the child; the range is validated by the parent not to overlap other mappings of
/// this harness (MAP_FIXED_NOREPLACE refuses to clobber anything else).
unsafe fn map_fixed(addr: u64, len: u64) -> bool {
    // SAFETY: the caller's contract; MAP_FIXED_NOREPLACE never replaces existing mappings.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    if p as u64 != addr {
        // Old kernels ignore the flag and treat the address as a hint.
        // SAFETY: unmapping what we just mapped.
        unsafe { libc::munmap(p, len as usize) };
        return false;
    }
    true
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers; the state page is mapped in the
    // child before the handler is installed.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let g = &mut uc.uc_mcontext.gregs;
        let rip = g[libc::REG_RIP as usize] as u64;
        let inside = ptr::read_volatile(st(ST_ACTIVE)) == 1
            && rip >= ptr::read_volatile(st(ST_SANDBOX_LO))
            && rip < ptr::read_volatile(st(ST_SANDBOX_HI));
        if !inside {
            // Not from the sandboxed code: a harness bug. Restore the default action and return, so the fault
            // repeats and kills the child; the parent reports it.
            libc::signal(sig, libc::SIG_DFL);
            return;
        }
        const ORDER: [libc::c_int; 16] = [
            libc::REG_RAX,
            libc::REG_RCX,
            libc::REG_RDX,
            libc::REG_RBX,
            libc::REG_RSP,
            libc::REG_RBP,
            libc::REG_RSI,
            libc::REG_RDI,
            libc::REG_R8,
            libc::REG_R9,
            libc::REG_R10,
            libc::REG_R11,
            libc::REG_R12,
            libc::REG_R13,
            libc::REG_R14,
            libc::REG_R15,
        ];
        for (i, &r) in ORDER.iter().enumerate() {
            ptr::write_volatile(st(ST_OUT_GPRS + 8 * i as u64), g[r as usize] as u64);
        }
        ptr::write_volatile(st(ST_OUT_RIP), rip);
        ptr::write_volatile(st(ST_OUT_RFLAGS), g[libc::REG_EFL as usize] as u64);
        ptr::write_volatile(st(ST_OUT_TRAPNO), g[libc::REG_TRAPNO as usize] as u64);
        ptr::write_volatile(st(ST_OUT_ERR), g[libc::REG_ERR as usize] as u64);
        ptr::write_volatile(st(ST_OUT_SIGNO), sig as u64);
        ptr::write_volatile(st(ST_OUT_CR2), (*info).si_addr() as u64);
        let csgsfs = g[libc::REG_CSGSFS as usize] as u64;
        ptr::write_volatile(st(ST_OUT_CS), csgsfs & 0xFFFF);
        // The FP state at the signal: the kernel's frame holds it as an FXSAVE image (the legacy area of its
        // XSAVE buffer). Copy it out, then give the harness clean x87/SSE control state back on sigreturn
        // (FCW 0x37F, empty x87 stack, MXCSR 0x1F80, no pending flags); Linux keeps the FP/SSE bits set in
        // the frame's XSTATE_BV, so these edits are what rt_sigreturn restores.
        let fpregs = uc.uc_mcontext.fpregs as *mut u8;
        if !fpregs.is_null() {
            ptr::copy_nonoverlapping(fpregs, (STATE_ADDR + ST_FXOUT) as *mut u8, FX_SIZE);
            ptr::write_unaligned(fpregs as *mut u16, 0x037F); // FCW
            ptr::write_unaligned(fpregs.add(2) as *mut u16, 0); // FSW
            ptr::write_unaligned(fpregs.add(4) as *mut u16, 0); // abridged FTW: all empty
            ptr::write_unaligned(fpregs.add(24) as *mut u32, 0x1F80); // MXCSR
            // The YMM upper halves: present in the frame's XSAVE image when the magic says it is one and
            // XSTATE_BV[2] is set; otherwise they are in their initial state (zero). The component is then
            // marked initial in the frame, so the harness resumes with clean upper halves.
            let out = (STATE_ADDR + ST_YMMOUT) as *mut u8;
            ptr::write_bytes(out, 0, YMM_SIZE);
            if ptr::read_unaligned(fpregs.add(464) as *const u32) == FP_XSTATE_MAGIC1 {
                let bv = fpregs.add(512) as *mut u64;
                if ptr::read_unaligned(bv) & 4 != 0 {
                    ptr::copy_nonoverlapping(fpregs.add(XSAVE_YMM_OFFSET), out, YMM_SIZE);
                    ptr::write_unaligned(bv, ptr::read_unaligned(bv) & !4);
                }
            }
        }
        ptr::write_volatile(st(ST_ACTIVE), 0);
        // Put back FS (selector 0, the saved base) in case the sequence loaded it; nothing above reads it.
        libc::syscall(libc::SYS_arch_prctl, ARCH_SET_FS, ptr::read_volatile(st(ST_FSBASE)));
        // Resume at the return stub in 64-bit mode with clean flags (DF clear for the Rust code).
        g[libc::REG_RIP as usize] = ptr::read_volatile(st(ST_RET_STUB)) as i64;
        g[libc::REG_EFL as usize] = 0x202;
        g[libc::REG_CSGSFS as usize] = ((csgsfs & !0xFFFF) | USER_CS64) as i64;
    }
}

/// Body of the forked child: sets up the fixed mappings and serves cases until the command pipe closes.
///
/// # Safety
/// Must be called exactly once, in a freshly forked child; `shm` must be the shared buffer and
/// `tramp`/`tramp_len` the trampoline bytes (both inherited from the parent).
unsafe fn child_main(
    cmd_fd: libc::c_int,
    res_fd: libc::c_int,
    shm: *mut u8,
    tramp: *const u8,
    tramp_len: usize,
    ret_stub: u64,
    entry32: u64,
) -> ! {
    // SAFETY: the whole body runs in the child; each step is a system call on memory we own or a copy within
    // mappings created here or inherited.
    unsafe {
        // Drop every inherited descriptor except our two pipe ends (other engines' pipes in particular, so
        // their EOF detection keeps working).
        for fd in 3..4096 {
            if fd != cmd_fd && fd != res_fd {
                libc::close(fd);
            }
        }
        if !map_fixed(TRAMP_ADDR, PAGE_SIZE) || !map_fixed(STATE_ADDR, PAGE_SIZE) {
            libc::_exit(101);
        }
        ptr::write_bytes(TRAMP_ADDR as *mut u8, 0xCC, PAGE_SIZE as usize);
        ptr::copy_nonoverlapping(tramp, TRAMP_ADDR as *mut u8, tramp_len);
        if libc::mprotect(
            TRAMP_ADDR as *mut libc::c_void,
            PAGE_SIZE as usize,
            libc::PROT_READ | libc::PROT_EXEC,
        ) != 0
        {
            libc::_exit(102);
        }
        ptr::write_volatile(st(ST_RET_STUB), ret_stub);
        ptr::write_volatile(st(ST_ENTRY32), entry32);
        // A far-pointer load (LFS) in a case replaces FS and its base, which holds glibc's thread
        // pointer (and the stack-protector canary the harness's libc calls read): remember the base so
        // the signal handler can put it back.
        if libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, st(ST_FSBASE)) != 0 {
            libc::_exit(106);
        }

        // Alternate signal stack: generated code runs with an arbitrary RSP.
        let alt = libc::mmap(
            ptr::null_mut(),
            ALTSTACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if alt == libc::MAP_FAILED {
            libc::_exit(103);
        }
        let ss = libc::stack_t { ss_sp: alt, ss_flags: 0, ss_size: ALTSTACK_SIZE };
        if libc::sigaltstack(&ss, ptr::null_mut()) != 0 {
            libc::_exit(104);
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigfillset(&mut sa.sa_mask);
        for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP] {
            if libc::sigaction(sig, &sa, ptr::null_mut()) != 0 {
                libc::_exit(105);
            }
        }
        // Make sure those signals are not blocked (the parent thread might have blocked some).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, ptr::null_mut());

        let mut mapped = [[0u64; 2]; MAX_REGIONS + 1];
        let mut nmapped = 0usize;
        loop {
            let mut b = 0u8;
            if libc::read(cmd_fd, &mut b as *mut u8 as *mut libc::c_void, 1) != 1 {
                libc::_exit(0);
            }
            let h = shm.add(SHM_HDR) as *mut ShmHeader;
            let mut hdr = ptr::read_volatile(h);
            hdr.status = child_run_case(&mut hdr, shm, &mut mapped, &mut nmapped);
            ptr::write_volatile(h, hdr);
            let done = 1u8;
            if libc::write(res_fd, &done as *const u8 as *const libc::c_void, 1) != 1 {
                libc::_exit(0);
            }
        }
    }
}

/// Runs one case in the child. Returns a status code; fills the result fields of `hdr`.
///
/// # Safety
/// Child only; `hdr` comes from the parent, which validated the case.
unsafe fn child_run_case(
    hdr: &mut ShmHeader,
    shm: *mut u8,
    mapped: &mut [[u64; 2]; MAX_REGIONS + 1],
    nmapped: &mut usize,
) -> u32 {
    // SAFETY: see the function contract; all addresses come from validated case data and the mappings below.
    unsafe {
        let code_len = (hdr.code_len as usize).min(MAX_CODE_LEN);
        let code_end = hdr.code_addr + code_len as u64;
        let code_lo = hdr.code_addr & !(PAGE_SIZE - 1);
        let code_hi = (code_end + PAGE_SIZE) & !(PAGE_SIZE - 1);
        let nreg = (hdr.nregions as usize).min(MAX_REGIONS);

        // Desired mapping set: code pages then data regions.
        let mut want = [[0u64; 2]; MAX_REGIONS + 1];
        want[0] = [code_lo, code_hi - code_lo];
        want[1..=nreg].copy_from_slice(&hdr.regions[..nreg]);
        let nwant = nreg + 1;
        if *nmapped != nwant || mapped[..nwant] != want[..nwant] {
            for m in &mapped[..*nmapped] {
                libc::munmap(m[0] as *mut libc::c_void, m[1] as usize);
            }
            *nmapped = 0;
            for w in &want[..nwant] {
                if !map_fixed(w[0], w[1]) {
                    return STATUS_MAP_FAILED;
                }
                mapped[*nmapped] = *w;
                *nmapped += 1;
            }
        }

        // Code pages: int3 filler, the code, then read+execute only.
        let clen = (code_hi - code_lo) as usize;
        libc::mprotect(code_lo as *mut libc::c_void, clen, libc::PROT_READ | libc::PROT_WRITE);
        ptr::write_bytes(code_lo as *mut u8, 0xCC, clen);
        ptr::copy_nonoverlapping(shm.add(SHM_CODE), hdr.code_addr as *mut u8, code_len);
        if libc::mprotect(code_lo as *mut libc::c_void, clen, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            return STATUS_MAP_FAILED;
        }
        // Data regions.
        let mut off = SHM_DATA;
        for r in &hdr.regions[..nreg] {
            ptr::copy_nonoverlapping(shm.add(off), r[0] as *mut u8, r[1] as usize);
            off += r[1] as usize;
        }
        // State block.
        for i in 0..16 {
            ptr::write_volatile(st(ST_GPRS + 8 * i as u64), hdr.regs_in[i]);
        }
        ptr::write_volatile(st(ST_RFLAGS), hdr.rflags_in);
        ptr::copy_nonoverlapping(hdr.fp_in.as_ptr(), (STATE_ADDR + ST_FXIN) as *mut u8, FX_SIZE);
        ptr::copy_nonoverlapping(hdr.ymm_in.as_ptr(), (STATE_ADDR + ST_YMMIN) as *mut u8, YMM_SIZE);
        ptr::write_volatile(st(ST_JMP64), hdr.rip_in);
        let far = (hdr.rip_in & 0xFFFF_FFFF) | (USER_CS32 << 32);
        ptr::write_volatile(st(ST_JMPFAR), far);
        ptr::write_volatile(st(ST_SANDBOX_LO), code_lo);
        ptr::write_volatile(st(ST_SANDBOX_HI), code_hi);
        ptr::write_volatile(st(ST_OUT_SIGNO), 0);
        ptr::write_volatile(st(ST_ACTIVE), 1);
        let entry = if hdr.mode == 1 { ptr::read_volatile(st(ST_ENTRY32)) } else { TRAMP_ADDR };
        let f: extern "sysv64" fn() = std::mem::transmute::<usize, extern "sysv64" fn()>(entry as usize);
        f();
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        if ptr::read_volatile(st(ST_OUT_SIGNO)) == 0 {
            return STATUS_NO_SIGNAL;
        }
        for i in 0..16 {
            hdr.regs_out[i] = ptr::read_volatile(st(ST_OUT_GPRS + 8 * i as u64));
        }
        hdr.rip_out = ptr::read_volatile(st(ST_OUT_RIP));
        hdr.rflags_out = ptr::read_volatile(st(ST_OUT_RFLAGS));
        hdr.trapno = ptr::read_volatile(st(ST_OUT_TRAPNO));
        hdr.err = ptr::read_volatile(st(ST_OUT_ERR));
        hdr.signo = ptr::read_volatile(st(ST_OUT_SIGNO));
        hdr.cr2 = ptr::read_volatile(st(ST_OUT_CR2));
        hdr.cs = ptr::read_volatile(st(ST_OUT_CS));
        ptr::copy_nonoverlapping((STATE_ADDR + ST_FXOUT) as *const u8, hdr.fp_out.as_mut_ptr(), FX_SIZE);
        ptr::copy_nonoverlapping((STATE_ADDR + ST_YMMOUT) as *const u8, hdr.ymm_out.as_mut_ptr(), YMM_SIZE);
        let mut off = SHM_DATA;
        for r in &hdr.regions[..nreg] {
            ptr::copy_nonoverlapping(r[0] as *const u8, shm.add(off), r[1] as usize);
            off += r[1] as usize;
        }
        STATUS_OK
    }
}
