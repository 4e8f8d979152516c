#!/usr/bin/env bash
# Installs everything inoculum needs on Debian 12 / 13 (as root, or with sudo):
#   Mesa's software WebGPU drivers (lavapipe for Vulkan; llvmpipe for GL ships with the base image),
#   Chromium (the report's headless rendering test), Slurm and munge (the one-node cluster of the sweep test;
#   scripts/slurm-local.sh starts it, nothing is started here),
#   Deno from the npm package `deno` (pinned), and the npm dependencies from package-lock.json.
# Optional: INOCULUM_BENCH_REF=1 also installs python3-torch and libopenblas0-pthread, the same-run reference of
# `deno task bench`. Without OpenBLAS, Debian's torch and numpy run on the reference BLAS (~3 GFLOP/s), which
# is no baseline; with it installed, the libblas.so.3 alternative points at OpenBLAS (50-300 GFLOP/s).
set -euo pipefail
cd "$(dirname "$0")/.."
DENO_VERSION=2.9.6
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

pkgs=(mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri chromium slurm-wlm munge)
[ "${INOCULUM_BENCH_REF:-0}" = 1 ] && pkgs+=(python3-torch python3-numpy libopenblas0-pthread)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v deno >/dev/null || [ "$(deno --version | head -1 | cut -d' ' -f2)" != "$DENO_VERSION" ]; then
  echo "setup: npm install -g deno@$DENO_VERSION"
  $SUDO npm install -g --no-fund --no-audit "deno@$DENO_VERSION" >/dev/null
fi
echo "setup: npm ci"
npm ci --no-fund --no-audit >/dev/null
deno --version | head -1
