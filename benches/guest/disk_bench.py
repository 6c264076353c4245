#!/usr/bin/env python3
"""In-guest disk benchmark: Ferrite (JIT) beside QEMU TCG, each with the same controller and the same
raw image, in the same run, on Debian's generic kernel (ata_piix/ahci modules in the initramfs).

For each emulator and controller (IDE: `--hda` / `-drive if=ide`; AHCI: `--disk ,if=ahci` /
`-device ahci` + `ide-hd`) it boots to the shell, then types four workloads on the serial console and
measures host wall time from typing each to its end marker:

  seq-write   dd if=/dev/zero of=/dev/sda bs=1M count=N oflag=direct
  seq-read    dd if=/dev/sda of=/dev/null bs=1M count=N iflag=direct
  rand-write  randio /dev/sda w M      (M random 4 KiB O_DIRECT writes, benches/guest/randio.c)
  rand-read   randio /dev/sda r M

O_DIRECT keeps the guest's page cache out, so every byte crosses the emulated controller. The image is a
fresh raw file of --size MiB (fully allocated) for every boot. The host's page cache is not dropped
(both emulators write through it alike). Prints MiB/s and IOPS per emulator and controller, and the
ratio Ferrite / QEMU.

Usage (after `cargo build --release -p ferrite`):
    python3 benches/guest/disk_bench.py [--ferrite target/release/ferrite] [--mib 64] [--ios 2000]
"""
import argparse, os, re, select, statistics, subprocess, sys, tempfile, time

CMDLINE = "console=ttyS0 panic=-1 quiet 8250.nr_uarts=1 i8042.noaux tsc=reliable"
MODULES = ["ata_piix", "ahci", "sd_mod", "crc32c_generic", "ext4"]
PROMPT = re.compile(rb"FERRITE-READY.*?/ # ", re.S)


def wait_for(proc, buf, pattern, deadline):
    while time.time() < deadline:
        m = pattern.search(buf[0])
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


def workloads(mib, ios):
    return [
        ("seq-write", f"dd if=/dev/zero of=/dev/sda bs=1M count={mib} oflag=direct 2>/dev/null", mib, "MiB/s"),
        ("seq-read", f"dd if=/dev/sda of=/dev/null bs=1M count={mib} iflag=direct 2>/dev/null", mib, "MiB/s"),
        ("rand-write", f"randio /dev/sda w {ios}", ios, "IOPS"),
        ("rand-read", f"randio /dev/sda r {ios}", ios, "IOPS"),
    ]


def run(cmd, work, timeout):
    """Boots `cmd`, runs every workload; returns {name: seconds} or raises with the console tail."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = [b""]
    try:
        if not wait_for(proc, buf, PROMPT, time.time() + timeout):
            raise RuntimeError("no shell: " + buf[0][-500:].decode(errors="replace"))
        times = {}
        for i, (name, line, _, _) in enumerate(work):
            marker = f"DONE-{i}-{name}"
            buf[0] = b""
            proc.stdin.write(f"{line}; echo DO''NE-{i}-{name} $?\n".encode())
            proc.stdin.flush()
            t0 = time.time()
            m = wait_for(proc, buf, re.compile(rf"{marker} (\d+)".encode()), t0 + timeout)
            if not m:
                raise RuntimeError(f"{name} did not finish: " + buf[0][-500:].decode(errors="replace"))
            times[name] = time.time() - t0
            if m.group(1) != b"0":
                raise RuntimeError(f"{name} failed in the guest: " + buf[0][-500:].decode(errors="replace"))
        proc.stdin.write(b"poweroff\n")
        proc.stdin.flush()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pass
        return times
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ferrite", default="target/release/ferrite")
    ap.add_argument("--mib", type=int, default=64, help="MiB moved by each sequential workload")
    ap.add_argument("--ios", type=int, default=2000, help="random 4 KiB I/Os per random workload")
    ap.add_argument("--size", type=int, default=256, help="image size in MiB")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--only", help="comma-separated emulator/controller names (default: all)")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ferrite-disk-bench-")
    randio = os.path.join(tmp, "randio")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "randio.c")
    subprocess.run(["gcc", "-O2", "-static", "-o", randio, src], check=True)
    args = [a.ferrite, "images", "--package", "linux-image-amd64", "--add", f"{randio}:/bin/randio"]
    for m in MODULES:
        args += ["--module", m]
    paths = subprocess.run(args, capture_output=True, check=True).stdout.decode()
    field = lambda k: re.search(rf"^{k}=(.*)$", paths, re.M).group(1)
    kernel, initrd = field("kernel"), field("initrd")
    img = os.path.join(tmp, "disk.img")

    fer = [a.ferrite, "run", "--accel", "jit", "--memory", "512M", "--kernel", kernel, "--initrd", initrd,
           "--append", CMDLINE]
    qemu = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot",
            "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE]
    setups = {
        "ferrite-jit ide": fer + ["--hda", img],
        "qemu-tcg ide": qemu + ["-drive", f"file={img},if=ide,format=raw,index=0"],
        "ferrite-jit ahci": fer + ["--disk", f"{img},if=ahci,format=raw"],
        "qemu-tcg ahci": qemu + ["-device", "ahci,id=ahci", "-drive", f"file={img},if=none,id=d0,format=raw",
                                 "-device", "ide-hd,drive=d0,bus=ahci.0"],
    }
    if a.only:
        setups = {k: v for k, v in setups.items() if k in a.only.split(",")}
    work = workloads(a.mib, a.ios)
    results = {}
    for name, cmd in setups.items():
        runs = []
        for _ in range(a.runs):
            with open(img, "wb") as f:
                f.write(b"\0" * (a.size << 20))
            try:
                runs.append(run(cmd, work, a.timeout))
            except RuntimeError as e:
                print(f"{name}: {e}", file=sys.stderr)
        if runs:
            results[name] = {w[0]: statistics.median(r[w[0]] for r in runs) for w in work}
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f}")
    print(f"{'emulator/controller':<20}" + "".join(f"{w[0] + ' (' + w[3] + ')':>22}" for w in work))
    for name, t in results.items():
        row = f"{name:<20}"
        for w in work:
            rate = w[2] / t[w[0]]
            other = results.get(name.replace("ferrite-jit", "qemu-tcg")) if name.startswith("ferrite") else None
            ratio = f" ({rate / (w[2] / other[w[0]]):.2f}x)" if other else ""
            row += f"{rate:>14.1f}{ratio:>8}"
        print(row)
    os.remove(img)


if __name__ == "__main__":
    main()
