#!/usr/bin/env python3
"""Guest CPU benchmark inside Linux (issue 13's second target): Ferrite's engines beside QEMU TCG, same run.

Builds benches/guest/cpubench.c with `gcc -O2 -static`, runs it natively for the reference checksums, puts
it into the initramfs with `ferrite images --add`, boots each engine (Debian's kernel, 1 vCPU, 512 MiB),
types `cpubench SCALE` at the shell and times every kernel from the host between its CPUBENCH-START and
CPUBENCH-END console lines. Every CPUBENCH-SUM line must equal the native one (a mismatch is reported and
the kernel's time is not used). Prints, per kernel, the median time of each engine and the speed of each
engine relative to QEMU TCG (TCG time / engine time: above 1 is faster than TCG), and their geometric mean.
`--cpu` also prints the same table by the engine process's CPU time (user + system, all threads, from
/proc/PID/stat at the same two console lines; 10 ms resolution), the steadier figure on a loaded host.
`--perf FILE` records the first engine's process with `perf record -e cpu-clock -g` during the first
kernel (started at its START line, stopped at its END line), to read with `perf report -i FILE`.

Usage (after `cargo build --release -p ferrite`):
    python3 benches/guest/cpu_bench.py [--scale 20] [--runs 1] [--only ferrite-jit,qemu-tcg] [--stats]
                                      [--kernels syscall,matmul] [--cpu]
                                      [--perf FILE]
"""
import argparse, math, os, re, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from boot_bench import CMDLINE, MARKER, PROMPT, wait_for  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpubench.c")
KERNELS = ["sieve", "crc32", "matmul", "qsort", "strhash", "chase", "syscall", "pagefault"]
LINE = re.compile(rb"CPUBENCH-(START|END) (\w+)\r?\n|CPUBENCH-SUM (\w+) ([0-9a-f]{16})|CPUBENCH-DONE")


def build(out_dir):
    exe = os.path.join(out_dir, "cpubench")
    subprocess.run(["gcc", "-O2", "-static", "-o", exe, SRC], check=True)
    return exe


def native_sums(exe, scale):
    out = subprocess.run([exe, str(scale)], capture_output=True, check=True).stdout
    return {m.group(1).decode(): m.group(2).decode() for m in re.finditer(rb"CPUBENCH-SUM (\w+) (\w+)", out)}


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_once(cmd, scale, timeout, kernels, cpu=None, perf=None):
    """Boots, runs cpubench, returns ({kernel: seconds}, {kernel: sum}, console tail, error); fills
    `cpu` (when given) with {kernel: CPU seconds of the process}; `perf`: a file to record the
    first kernel's profile in."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = [b""]
    recorder = [None, None]  # the perf process and the kernel it records
    try:
        t0 = time.time()
        if not wait_for(proc, buf, MARKER, t0 + timeout) or not wait_for(proc, buf, PROMPT, t0 + timeout):
            return None, None, buf[0][-400:], "no shell prompt"
        pos = len(buf[0])
        proc.stdin.write(f"cpubench {scale} {' '.join(kernels)}\n".encode())
        proc.stdin.flush()
        starts, times, sums = {}, {}, {}
        deadline = time.time() + timeout
        done = False
        while not done and time.time() < deadline:
            # Read whatever is there, stamping each complete marker line the moment it is seen.
            if not wait_for(proc, buf, re.compile(rb"CPUBENCH-\w+[^\n]*\n", re.S), time.time() + 0.5):
                if proc.poll() is not None:
                    break
            now = time.time()
            for m in LINE.finditer(buf[0], pos):
                pos = m.end()
                if m.group(1) == b"START":
                    starts[m.group(2).decode()] = now
                    if perf and recorder[0] is None:
                        recorder[:] = [subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-o", perf, "-p",
                                                         str(proc.pid)], stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL), m.group(2).decode()]
                    if cpu is not None:
                        cpu[m.group(2).decode() + "@"] = cpu_seconds(proc.pid)
                elif m.group(1) == b"END":
                    k = m.group(2).decode()
                    times[k] = now - starts.pop(k, now)
                    if recorder[0] is not None and recorder[1] == k:
                        recorder[0].send_signal(signal.SIGINT)
                        recorder[0].wait()
                        recorder[1] = None
                    if cpu is not None:
                        c0, c1 = cpu.pop(k + "@", None), cpu_seconds(proc.pid)
                        if c0 is not None and c1 is not None:
                            cpu[k] = c1 - c0
                elif m.group(3):
                    sums[m.group(3).decode()] = m.group(4).decode()
                else:
                    done = True
            # Lines are consumed as they arrive; only the unfinished last line is searched again.
            buf[0], pos = buf[0][max(pos, buf[0].rfind(b"\n") + 1):], 0
        proc.stdin.write(b"poweroff\n")
        proc.stdin.flush()
        try:
            rest, _ = proc.communicate(timeout=120)
            buf[0] += rest or b""
        except subprocess.TimeoutExpired:
            pass
        return times, sums, buf[0][-2000:], None if done else "cpubench did not finish"
    finally:
        if recorder[0] is not None and recorder[0].poll() is None:
            recorder[0].send_signal(signal.SIGINT)
            recorder[0].wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--ferrite", default="target/release/ferrite")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--only", help="comma-separated engine names (default: ferrite-jit,qemu-tcg)")
    ap.add_argument("--stats", action="store_true", help="print Ferrite's --stats lines (inline share)")
    ap.add_argument("--kernels", help="comma-separated kernels to run (default: all eight)")
    ap.add_argument("--cpu", action="store_true", help="also compare by the engine process's CPU time")
    ap.add_argument("--perf", help="perf record the first engine's process during the first kernel into this file")
    a = ap.parse_args()
    kernels = a.kernels.split(",") if a.kernels else KERNELS
    tmp = tempfile.mkdtemp(prefix="cpubench-")
    exe = build(tmp)
    want = native_sums(exe, a.scale)
    assert sorted(want) == sorted(KERNELS), f"native run printed {want}"
    assert set(kernels) <= set(KERNELS), f"unknown kernel in {kernels}"
    paths = subprocess.run([a.ferrite, "images", "--add", f"{exe}:/bin/cpubench"], capture_output=True,
                           check=True).stdout.decode()
    field = lambda k: re.search(rf"^{k}=(.*)$", paths, re.M).group(1)
    kernel, initrd = field("kernel"), field("initrd")
    fer = lambda accel: [a.ferrite, "run", "--accel", accel, "--memory", "512M", "--kernel", kernel, "--initrd",
                         initrd, "--append", CMDLINE] + (["--stats"] if a.stats else [])
    engines = {
        "ferrite-jit": fer("jit"),
        "qemu-tcg": ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic",
                     "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE],
        "ferrite-interp": fer("interp"),
    }
    only = (a.only or "ferrite-jit,qemu-tcg").split(",")
    engines = {k: v for k, v in engines.items() if k in only}
    results, cpu_results = {}, {}
    ok = True
    for name, cmd in engines.items():
        per = {k: [] for k in kernels}
        per_cpu = {k: [] for k in kernels}
        for _ in range(a.runs):
            cpu = {}
            times, sums, tail, err = run_once(cmd, a.scale, a.timeout, kernels, cpu, a.perf)
            a.perf = None
            if err:
                print(f"{name}: {err}; console tail:\n{tail.decode(errors='replace')}", file=sys.stderr)
                ok = False
            for k, t in (times or {}).items():
                if sums.get(k) != want[k]:
                    print(f"{name}: {k} checksum {sums.get(k)} differs from the native {want[k]}", file=sys.stderr)
                    ok = False
                else:
                    per[k].append(t)
                    if k in cpu:
                        per_cpu[k].append(cpu[k])
            if a.stats and name.startswith("ferrite"):
                for l in tail.decode(errors="replace").splitlines():
                    if "inline" in l or "jit:" in l or "instructions" in l:
                        print(f"{name}: {l.strip()}")
        results[name] = {k: statistics.median(v) for k, v in per.items() if v}
        cpu_results[name] = {k: statistics.median(v) for k, v in per_cpu.items() if v}
    table(results, kernels, f"scale {a.scale}, {a.runs} run(s), median host seconds between CPUBENCH-START and -END")
    if a.cpu:
        table(cpu_results, kernels, f"scale {a.scale}, {a.runs} run(s), median CPU seconds (user + system, all "
              "threads) of the engine's process between CPUBENCH-START and -END")
    sys.exit(0 if ok else 1)


def table(results, kernels, title):
    """Prints one comparison table (engine columns, ratios against qemu-tcg) and the geometric means."""
    base = results.get("qemu-tcg", {})
    names = list(results)
    print(title)
    print(f"{'kernel':<10}" + "".join(f"{n:>16}" for n in names) +
          "".join(f"{n + '/tcg':>22}" for n in names if n != "qemu-tcg"))
    for k in kernels:
        row = f"{k:<10}" + "".join(f"{results[n].get(k, float('nan')):>16.3f}" for n in names)
        for n in names:
            if n != "qemu-tcg":
                t, b = results[n].get(k), base.get(k)
                row += f"{(b / t if t and b else float('nan')):>22.3f}"
        print(row)
    for n in names:
        if n == "qemu-tcg":
            continue
        r = [base[k] / results[n][k] for k in kernels if k in base and k in results[n]]
        if r:
            print(f"{n}: speed vs qemu-tcg geomean {math.exp(sum(map(math.log, r)) / len(r)):.3f} "
                  f"(min {min(r):.3f}, max {max(r):.3f}) over {len(r)} kernels")


if __name__ == "__main__":
    main()
