#!/usr/bin/env bash
# The SDL2 window under Xvfb (`frontends/tests/sdl_window.rs`): installs what the `sdl` feature and the
# test need when missing (libsdl2-dev to build against SDL2; xvfb, xdotool and x11-apps' xwd to run a
# real window, type into it and capture it), builds Ferrite with `--features sdl` and runs the test.
# CI runs it after the workspace's tests (.ci/run). With FERRITE_SDL_WINDOW_PNG=FILE the window's capture
# is saved as a PNG (docs/images/sdl-window.png was made so).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
need=()
pkg-config --exists sdl2 2>/dev/null || need+=(libsdl2-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v xdotool >/dev/null 2>&1 || need+=(xdotool)
command -v xwd >/dev/null 2>&1 || need+=(x11-apps)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo clippy --release -p ferrite --features sdl --all-targets -- -D warnings
cargo test --release -p ferrite --features sdl --test sdl_window -- --nocapture
