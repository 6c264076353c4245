#!/usr/bin/env bash
# One-time set-up of a fresh Debian machine for Ferrite: nasm assembles the test and demo ROMs;
# qemu-system-x86 is the cross-check that every test ROM also passes under QEMU TCG; gcc and libc6-dev
# build the static test program that the Linux boot test runs natively and in the guest; gdb drives the GDB
# stub's tests. `ferrite images` (the
# Linux guest: Debian's kernel and busybox-static, fetched with `apt-get download`) needs the package lists,
# which a fresh machine does not have until `apt-get update`.
# Safe to run again: it installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
updated=0
if ! apt-cache show --no-all-versions linux-image-cloud-amd64 busybox-static >/dev/null 2>&1; then
  # Offline, the demo ROM still runs: do not fail here.
  if $SUDO apt-get update -qq; then updated=1; else echo "setup.sh: apt-get update failed (offline?)" >&2; fi
fi
need=()
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
# The storage tests make and check disk images with qemu-img (and qemu-io for image locking).
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
# The Linux disk tests make ext4 images (mkfs.ext4) and check them afterwards (debugfs, e2fsck), and
# make the CD-ROM's ISO 9660 image with genisoimage.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v genisoimage >/dev/null 2>&1 || need+=(genisoimage)
# The Linux boot test compiles a static C program (x87/SSE checks) to run natively and in the guest.
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
# The BIOS boot tests make a FAT disk image with a boot loader without mounting it (mformat, mcopy, and
# SYSLINUX's installer, which runs mtools).
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
# The GDB stub's tests drive Debian's gdb in batch mode.
command -v gdb >/dev/null 2>&1 || need+=(gdb)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$updated" -eq 0 ]; then $SUDO apt-get update -qq; fi
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
