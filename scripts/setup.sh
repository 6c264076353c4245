#!/usr/bin/env bash
# One-time set-up of a fresh Debian machine for Ferrite: nasm assembles the test and demo ROMs;
# qemu-system-x86 is the cross-check that every test ROM also passes under QEMU TCG.
# Safe to run again: it installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
need=()
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
