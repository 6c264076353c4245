//! Kicking the vCPU out of `KVM_RUN` at a host deadline: a POSIX timer signals the thread running the
//! vCPU, whose signal mask lets the signal in only inside `KVM_RUN`.

use super::*;

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub(super) fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

extern "C" fn kick_handler(_: libc::c_int) {}

pub(super) fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for a real-time signal Ferrite
        // owns; `sa` is fully initialised (zeroed, then the fields set).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = kick_handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

pub(super) fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Kicks the vCPU out of KVM_RUN at a host deadline: a POSIX timer sends [`kick_signal`] to the thread
/// that runs the vCPU. The signal is blocked in that thread except inside KVM_RUN (KVM_SET_SIGNAL_MASK),
/// so a signal that arrives just before KVM_RUN stays pending and makes it return at once: no lost
/// wake-ups, and no handler ever runs.
pub(super) struct Kicker {
    pub(super) timer: libc::timer_t,
    pub(super) tid: i32,
}

impl Kicker {
    pub(super) fn for_current_thread(vcpu: &VcpuFd) -> Result<Kicker, String> {
        install_kick_handler();
        let sig = kick_signal();
        let tid = current_tid();
        // SAFETY: sigset_t values are initialised with sigemptyset before use; pthread_sigmask only changes
        // this thread's mask; the KVM_SET_SIGNAL_MASK argument is a properly laid-out kvm_signal_mask
        // (u32 length 8 followed by the 8-byte kernel sigset) on the stack for the duration of the call;
        // timer_create writes the new timer id into `timer`.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, sig);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &block, std::ptr::null_mut()) != 0 {
                return Err("cannot block the vCPU kick signal".into());
            }
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut cur);
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            let mut kmask = 0u64;
            for s in 1..=64 {
                if s != sig && libc::sigismember(&cur, s) == 1 {
                    kmask |= 1 << (s - 1);
                }
            }
            #[repr(C)]
            struct SignalMask {
                len: u32,
                mask: u64,
            }
            let arg = SignalMask { len: 8, mask: kmask };
            if libc::ioctl(vcpu.as_raw_fd(), KVM_SET_SIGNAL_MASK as _, &arg) != 0 {
                return Err(format!("KVM_SET_SIGNAL_MASK failed: {}", std::io::Error::last_os_error()));
            }
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = sig;
            sev.sigev_notify_thread_id = tid;
            let mut timer: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                return Err(format!("timer_create failed: {}", std::io::Error::last_os_error()));
            }
            Ok(Kicker { timer, tid })
        }
    }

    /// Fires once after `after` (at least 1 µs), or never for `None`.
    pub(super) fn arm(&self, after: Option<Duration>) {
        let value = match after {
            Some(d) => {
                let d = d.max(Duration::from_micros(1));
                libc::timespec {
                    tv_sec: d.as_secs() as libc::time_t,
                    tv_nsec: d.subsec_nanos() as libc::c_long,
                }
            }
            None => libc::timespec { tv_sec: 0, tv_nsec: 0 },
        };
        let its = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
        // SAFETY: `timer` is a live timer created by timer_create and owned by `self`.
        unsafe {
            libc::timer_settime(self.timer, 0, &its, std::ptr::null_mut());
        }
    }

    /// Consumes pending kick signals (they are blocked outside KVM_RUN, so they stay pending).
    pub(super) fn eat(&self) {
        // SAFETY: the set is initialised by sigemptyset; sigtimedwait with a zero timeout never blocks.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, kick_signal());
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) > 0 {}
        }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this Kicker created; it is not used afterwards.
        unsafe {
            libc::timer_delete(self.timer);
        }
        self.eat();
    }
}
