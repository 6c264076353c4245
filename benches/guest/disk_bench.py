#!/usr/bin/env python3
"""In-guest disk benchmark: Ferrite (JIT) beside QEMU TCG, each with the same controller and the same
raw image, in the same run, on Debian's generic kernel (ata_piix/ahci modules in the initramfs).

Each emulator boots once with two disks: an IDE one (`--hda` / `-drive if=ide`: /dev/sda, ata_piix
loads first) and an AHCI one (`--disk ,if=ahci` / `-device ahci` + `ide-hd`: /dev/sdb). At the shell it
types four workloads per disk on the serial console and measures, from typing each to its end marker,
host wall time and the host CPU time of the emulator process (all its threads; /proc/PID/stat), which
says more than wall time when the host is shared with other work:

  seq-write   dd if=/dev/zero of=DEV bs=1M count=N oflag=direct
  seq-read    dd if=DEV of=/dev/null bs=1M count=N iflag=direct
  rand-write  randio DEV w M      (M random 4 KiB O_DIRECT writes, benches/guest/randio.c)
  rand-read   randio DEV r M

O_DIRECT keeps the guest's page cache out, so every byte crosses the emulated controller. The image is a
fresh raw file of --size MiB (zero-filled, fully allocated) for every boot. The host's page cache is not dropped
(both emulators write through it alike). Prints MiB/s and IOPS per emulator and controller by wall time and by
CPU time, and the ratio Ferrite / QEMU.

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


def workloads(dev, mib, ios):
    return [
        ("seq-write", f"dd if=/dev/zero of={dev} bs=1M count={mib} oflag=direct 2>/dev/null", mib, "MiB/s"),
        ("seq-read", f"dd if={dev} of=/dev/null bs=1M count={mib} iflag=direct 2>/dev/null", mib, "MiB/s"),
        ("rand-write", f"randio {dev} w {ios}", ios, "IOPS"),
        ("rand-read", f"randio {dev} r {ios}", ios, "IOPS"),
    ]


def cpu_seconds(pid):
    """User + system CPU time of process `pid` (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(cmd, work, timeout):
    """Boots `cmd`, runs every (disk, workload); returns {(disk, name): (wall s, cpu s)} or raises."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = [b""]
    try:
        if not wait_for(proc, buf, PROMPT, time.time() + timeout):
            raise RuntimeError("no shell: " + buf[0][-500:].decode(errors="replace"))
        times = {}
        for i, (disk, name, line, _, _) in enumerate(work):
            marker = f"DONE-{i}-{name}"
            buf[0] = b""
            c0 = cpu_seconds(proc.pid)
            t0 = time.time()
            proc.stdin.write(f"{line}; echo DO''NE-{i}-{name} $?\n".encode())
            proc.stdin.flush()
            m = wait_for(proc, buf, re.compile(rf"{marker} (\d+)".encode()), t0 + timeout)
            if not m:
                raise RuntimeError(f"{disk} {name} did not finish: " + buf[0][-500:].decode(errors="replace"))
            times[(disk, name)] = (time.time() - t0, cpu_seconds(proc.pid) - c0)
            if m.group(1) != b"0":
                raise RuntimeError(f"{disk} {name} failed in the guest: " + buf[0][-500:].decode(errors="replace"))
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
    ide, sata = os.path.join(tmp, "ide.img"), os.path.join(tmp, "sata.img")

    emulators = {
        "ferrite-jit": [a.ferrite, "run", "--accel", "jit", "--memory", "512M", "--kernel", kernel,
                        "--initrd", initrd, "--append", CMDLINE, "--hda", ide, "--disk", f"{sata},if=ahci,format=raw"],
        "qemu-tcg": ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot",
                     "-kernel", kernel, "-initrd", initrd, "-append", CMDLINE,
                     "-drive", f"file={ide},if=ide,format=raw,index=0",
                     "-device", "ahci,id=ahci", "-drive", f"file={sata},if=none,id=d0,format=raw",
                     "-device", "ide-hd,drive=d0,bus=ahci.0"],
    }
    if a.only:
        emulators = {k: v for k, v in emulators.items() if k in a.only.split(",")}
    work = [(disk,) + w for disk, dev in (("ide", "/dev/sda"), ("ahci", "/dev/sdb"))
            for w in workloads(dev, a.mib, a.ios)]
    results = {}
    for name, cmd in emulators.items():
        runs = []
        for _ in range(a.runs):
            for img in (ide, sata):
                with open(img, "wb") as f:
                    f.write(b"\0" * (a.size << 20))
            try:
                runs.append(run(cmd, work, a.timeout))
            except RuntimeError as e:
                print(f"{name}: {e}", file=sys.stderr)
        if runs:
            results[name] = {k: (statistics.median(r[k][0] for r in runs), statistics.median(r[k][1] for r in runs))
                             for k in runs[0]}
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"{'emulator':<12} {'disk':<5} {'workload':<11} {'unit':<6} {'by wall':>9} {'by CPU':>9} "
          f"{'wall s':>7} {'CPU s':>7} {'vs QEMU (CPU)':>14}")
    for name, t in results.items():
        for (disk, wname, _, amount, unit) in work:
            wall, cpu = t[(disk, wname)]
            q = results.get("qemu-tcg", {}).get((disk, wname)) if name != "qemu-tcg" else None
            ratio = f"{(amount / max(cpu, 1e-3)) / (amount / max(q[1], 1e-3)):.2f}x" if q else ""
            print(f"{name:<12} {disk:<5} {wname:<11} {unit:<6} {amount / wall:>9.1f} {amount / max(cpu, 1e-3):>9.1f} "
                  f"{wall:>7.2f} {cpu:>7.2f} {ratio:>14}")
    for img in (ide, sata):
        os.remove(img)


if __name__ == "__main__":
    main()
