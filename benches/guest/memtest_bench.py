#!/usr/bin/env python3
"""memtest86+ benchmark: Ferrite's JIT beside QEMU TCG on Debian's memtest86+ (the 64-bit program,
`memtest86+x64.bin`), same image, same memory size, both booted through SeaBIOS as a Linux-protocol
kernel (QEMU's `-kernel`; Ferrite's `--bios bios.bin --kernel`, its linuxboot option ROM) with
memtest86+'s `console=ttyS0,115200`, which mirrors its screen on the serial port.

For each engine it reads the serial output, follows the test number memtest86+ shows (row 4 of its
screen: ` #N  [name]`) and records the process's CPU time (user + system, all threads, from
/proc/PID/stat) when each test first appears. It prints the CPU time from the start of test #0 to
the start of test #10 (bit fade), i.e. tests #0-#9, and to the end of the first pass, with the
per-test split and the wall time. CPU time is the figure to compare on a shared host.

Usage (after `cargo build --release -p ferrite`):
    python3 benches/guest/memtest_bench.py [--memory 64M] [--only qemu-tcg,ferrite-jit]
        [--ferrite target/release/ferrite] [--timeout 1800] [--extra-ferrite-arg=--stats]
"""
import argparse, os, re, select, shutil, subprocess, sys, time

TEST = re.compile(rb"\x1b\[4;35H #(\d+) ")
PASS = re.compile(rb"Pass:\s+(\d+)")


def cpu_seconds(pid):
    """User + system CPU time of the process so far (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def run(cmd, timeout, until, log):
    """Runs `cmd` until memtest86+ starts test `until` (or ends its first pass, or `timeout` wall
    seconds pass). Returns {test: (cpu, wall)} at each test's first appearance, plus 'pass' for the
    end of the first pass, and 'end' for the stop."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, buf, scanned = {}, b"", 0
    try:
        while time.time() < t0 + timeout:
            r, _, _ = select.select([proc.stdout], [], [], 0.05)
            if r:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                if log:
                    log.write(chunk)
                # Patterns may straddle reads: rescan a little of what was scanned before.
                start = max(0, scanned - 64)
                now = (cpu_seconds(proc.pid), time.time() - t0)
                for m in TEST.finditer(buf, start):
                    seen.setdefault(int(m.group(1)), now)
                for m in PASS.finditer(buf, start):
                    if int(m.group(1)) >= 1:
                        seen.setdefault("pass", now)
                scanned = len(buf)
                if "pass" in seen or any(isinstance(k, int) and k >= until for k in seen):
                    break
            elif proc.poll() is not None:
                break
        seen["end"] = (cpu_seconds(proc.pid), time.time() - t0)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if not seen.keys() - {"end"}:
        tail = buf[-400:].decode(errors="replace")
        print(f"  no memtest86+ test seen; output ends: {tail!r}", file=sys.stderr)
    return seen


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ferrite", default="target/release/ferrite")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--memory", default="64M")
    p.add_argument("--only", default="qemu-tcg,ferrite-jit")
    p.add_argument("--until", type=int, default=10, help="stop when this test starts (default 10: tests #0-#9)")
    p.add_argument("--timeout", type=float, default=1800, help="wall seconds per engine")
    p.add_argument("--extra-ferrite-arg", action="append", default=[])
    p.add_argument("--log-dir", help="write each engine's serial output there")
    a = p.parse_args()

    def images(flag):
        out = subprocess.run([a.ferrite, "images", flag], capture_output=True, check=True).stdout.decode()
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    bios = images("--seabios")["bios"]
    mt = images("--memtest")["bin"]
    append = "console=ttyS0,115200"
    mb = a.memory.rstrip("MmGg")
    engines = {
        "qemu-tcg": [a.qemu, "-accel", "tcg", "-m", mb, "-kernel", mt, "-append", append,
                     "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"],
        "ferrite-jit": [a.ferrite, "run", "--accel", "jit", "--memory", a.memory, "--bios", bios,
                        "--kernel", mt, "--append", append] + a.extra_ferrite_arg,
    }
    results = {}
    for name in a.only.split(","):
        cmd = engines[name]
        if shutil.which(cmd[0]) is None and not os.path.exists(cmd[0]):
            print(f"{name}: skipped, {cmd[0]} not found")
            continue
        print(f"{name}: {' '.join(cmd)}", flush=True)
        log = open(os.path.join(a.log_dir, f"{name}.serial"), "wb") if a.log_dir else None
        seen = run(cmd, a.timeout, a.until, log)
        if log:
            log.close()
        results[name] = seen
        tests = sorted(k for k in seen if isinstance(k, int))
        split = "  ".join(f"#{t} {seen[t][0]:.1f}" for t in tests)
        print(f"  CPU s at each test's start: {split}", flush=True)

    def span(seen, end):
        if 0 in seen and end in seen:
            return seen[end][0] - seen[0][0], seen[end][1] - seen[0][1]
        return None

    print(f"\nmemtest86+ {os.path.basename(mt)}, {a.memory}: tests #0-#{a.until - 1} (start of #0 to start of #{a.until})")
    print("| engine | CPU s | wall s | CPU s at the end of the run |")
    print("|---|---|---|---|")
    for name, seen in results.items():
        s = span(seen, a.until) or span(seen, "pass")
        shown = f"{s[0]:.1f} | {s[1]:.1f}" if s else "not reached | -"
        print(f"| {name} | {shown} | {seen['end'][0]:.1f} |")
    q, f = results.get("qemu-tcg"), results.get("ferrite-jit")
    if q and f and span(q, a.until) and span(f, a.until):
        print(f"ferrite-jit / qemu-tcg CPU time: {span(f, a.until)[0] / span(q, a.until)[0]:.2f}")


if __name__ == "__main__":
    main()
