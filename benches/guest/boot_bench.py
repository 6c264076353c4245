#!/usr/bin/env python3
"""Linux boot benchmark: Ferrite (each available engine: interp, jit, kvm) beside QEMU (TCG, and KVM when usable) on the
same Debian kernel, initramfs and command line, 1 vCPU, 512 MiB.

For every engine and run it measures host wall time from process start to the guest's ready marker
(FERRITE-READY, printed by the initramfs' /init), then types a fixed CPU workload on the serial console
(busybox awk: 200,000 iterations of floating-point multiply, add and divide; Debian's
busybox-static awk has no math library), measures until the workload's done marker, and powers
the guest off. Prints the median of the runs and the ratio to QEMU TCG, side by side.

Usage (after `cargo build --release -p ferrite` and `target/release/ferrite images`):
    python3 benches/guest/boot_bench.py [--runs 3] [--ferrite target/release/ferrite]
"""
import argparse, os, re, select, shutil, statistics, subprocess, sys, time

# CPU seconds (user + system) the last run_once's process had used at the ready marker, and of
# that, its JIT compile thread's ("ferrite-jit"; 0 without one).
cpu_ready = [float("nan")]
cpu_compile = [float("nan")]

CMDLINE = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable"
MARKER = b"FERRITE-READY"
PROMPT = re.compile(rb"FERRITE-READY.*?/ # ", re.S)
WORKLOAD = b"awk 'BEGIN{s=0;for(i=1;i<=200000;i++)s+=1.5*i/(i+0.25);printf \"WORK-%d-DONE\\n\", s}'\n"
DONE = re.compile(rb"WORK-(\d+)-DONE")


def wait_for(proc, buf, pattern, deadline):
    while time.time() < deadline:
        m = pattern.search(buf[0]) if hasattr(pattern, "search") else (pattern in buf[0])
        if m:
            return m
        r, _, _ = select.select([proc.stdout], [], [], 0.05)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            buf[0] += chunk
        elif proc.poll() is not None:
            return None
    return None


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (all its threads): steadier than wall time
    on a loaded host."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def compile_seconds(pid):
    """CPU time of the process's compile thread(s) (named ferrite-jit): on 2 cores it runs beside the
    guest's thread, so the guest thread's share (the rest) bounds the wall time from below."""
    total = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            if head.split("(", 1)[1] == "ferrite-jit":
                fields = rest.split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")
    return total


def run_once(cmd, timeout):
    t0 = time.time()
    cpu_ready[0] = float("nan")
    cpu_compile[0] = float("nan")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = [b""]
    try:
        if not wait_for(proc, buf, MARKER, t0 + timeout):
            return None, None, "no ready marker: " + buf[0][-300:].decode(errors="replace")
        t_ready = time.time() - t0
        cpu_ready[0] = cpu_seconds(proc.pid)
        cpu_compile[0] = compile_seconds(proc.pid)
        # Type only once the shell shows its prompt (input sent earlier can be flushed when it opens the tty).
        if not wait_for(proc, buf, PROMPT, time.time() + timeout):
            return t_ready, None, "no shell prompt"
        proc.stdin.write(WORKLOAD)
        proc.stdin.flush()
        t1 = time.time()
        m = wait_for(proc, buf, DONE, t1 + timeout)
        if not m:
            return t_ready, None, "workload did not finish"
        t_work = time.time() - t1
        proc.stdin.write(b"poweroff\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        return t_ready, t_work, m.group(1).decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ferrite", default="target/release/ferrite")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--only", help="comma-separated engine names (default: all)")
    ap.add_argument("--jit-cache", default="/tmp/ferrite-bench-jit-cache",
                    help="directory of the persistent translation cache for ferrite-jit-cold/-warm")
    ap.add_argument("--ferrite-arg", action="append", default=[],
                    help="an extra argument for every ferrite run (repeatable), e.g. --ferrite-arg=--jit-threshold=200")
    a = ap.parse_args()
    paths = subprocess.run([a.ferrite, "images"], capture_output=True, check=True).stdout.decode()
    field = lambda k: re.search(rf"^{k}=(.*)$", paths, re.M).group(1)
    kernel, initrd = field("kernel"), field("initrd")
    engines = {
        "ferrite-interp": [a.ferrite, "run", "--accel", "interp", "--memory", "512M", "--kernel", kernel,
                           "--initrd", initrd, "--append", CMDLINE],
        "ferrite-jit": [a.ferrite, "run", "--accel", "jit", "--memory", "512M", "--kernel", kernel,
                        "--initrd", initrd, "--append", CMDLINE],
        # The persistent translation cache: `cold` starts each run from an empty cache (and fills it),
        # `warm` finds what the previous run saved.
        "ferrite-jit-cold": [a.ferrite, "run", "--accel", "jit", "--jit-cache", a.jit_cache, "--memory", "512M",
                             "--kernel", kernel, "--initrd", initrd, "--append", CMDLINE],
        "ferrite-jit-warm": [a.ferrite, "run", "--accel", "jit", "--jit-cache", a.jit_cache, "--memory", "512M",
                             "--kernel", kernel, "--initrd", initrd, "--append", CMDLINE],
        "qemu-tcg": ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic",
                     "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE],
    }
    kvm_ok = os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists("/sys/module/kvm_pvm")
    if kvm_ok:
        engines["ferrite-kvm"] = engines["ferrite-interp"][:2] + ["--accel", "kvm"] + engines["ferrite-interp"][4:]
        engines["qemu-kvm"] = ["qemu-system-x86_64", "-accel", "kvm"] + engines["qemu-tcg"][3:]
    else:
        print("kvm engines skipped: /dev/kvm missing or a software-emulating KVM (PVM)", file=sys.stderr)
    for name, cmd in engines.items():
        if name.startswith("ferrite-"):
            cmd[2:2] = a.ferrite_arg
    if a.only:
        engines = {k: v for k, v in engines.items() if k in a.only.split(",")}
    results = {}
    for name, cmd in engines.items():
        ready, work, sums, cpus, comps = [], [], set(), [], []
        if name == "ferrite-jit-warm" and not os.path.isdir(a.jit_cache):
            run_once(cmd, a.timeout)  # fill the cache (not measured)
        for _ in range(a.runs):
            if name == "ferrite-jit-cold":
                shutil.rmtree(a.jit_cache, ignore_errors=True)
            r, w, info = run_once(cmd, a.timeout)
            if r is None or w is None:
                print(f"{name}: {info}", file=sys.stderr)
                continue
            ready.append(r)
            work.append(w)
            cpus.append(cpu_ready[0])
            comps.append(cpu_compile[0])
            sums.add(info)
        if ready:
            results[name] = (statistics.median(ready), statistics.median(work), sums, statistics.median(cpus),
                             statistics.median(comps))
    base = results.get("qemu-tcg")
    # "of it compiling": the CPU seconds of Ferrite's JIT compile thread within "CPU to marker"
    # (on 2 cores it runs beside the guest's thread).
    print(f"{'engine':<16} {'to marker (s)':>14} {'CPU to marker (s)':>18} {'of it compiling':>16} {'workload (s)':>13} "
          f"{'marker vs qemu-tcg':>19} {'CPU vs qemu-tcg':>16}  result")
    for name, (r, w, sums, c, comp) in results.items():
        ratio = f"{r / base[0]:.2f}x" if base else "-"
        cratio = f"{c / base[3]:.2f}x" if base else "-"
        print(f"{name:<16} {r:>14.2f} {c:>18.2f} {comp:>16.2f} {w:>13.2f} {ratio:>19} {cratio:>16}  "
              f"{','.join(sorted(sums))}")


if __name__ == "__main__":
    main()
