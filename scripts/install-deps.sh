#!/usr/bin/env bash
# Installs, with apt-get, only the Debian packages REED Workbench needs that
# are missing, and the small Python packages the format tests use.
# Says what it installs; silent when everything is present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libncurses-dev libreadline-dev libpng-dev liblua5.4-dev zlib1g-dev
  libopenblas-dev libopenblas-openmp-dev
  dataset-fashion-mnist
  tmux python3 python3-pip
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python's safetensors and numpy read our checkpoints in the format tests.
py=$(command -v python3 || true)
if [ -n "$py" ] && ! "$py" -c 'import safetensors, numpy' 2>/dev/null; then
  echo "install-deps: installing Python packages safetensors numpy (pip)"
  "$py" -m pip install -q safetensors numpy 2>/dev/null ||
    "$py" -m pip install -q --break-system-packages safetensors numpy
fi
