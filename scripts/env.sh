#!/usr/bin/env bash
# Make sure this checkout has what it needs, installing only what is missing:
#   - the proxy dataset, Debian's dataset-fashion-mnist package;
#   - PostgreSQL (Debian's postgresql package), for studies shared by workers on many machines
#     and the tests that start a server of their own;
#   - Chromium and its WebDriver (Debian's chromium, chromium-driver), for the web UI's tests;
#   - Prometheus (Debian's prometheus), for the serving tests that scrape a deployment;
#   - a virtual environment in .venv with the project, its extras and dev tools, and Syne Tune (for
#     the early-stopping replay benchmark), at the exact versions of requirements/lock.txt, the
#     versions the project was tested with (reinstalled when the lock, pyproject.toml or this file
#     changes; scripts/lock regenerates the lock).
# Sourced by scripts/quickstart and scripts/test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements/lock.txt"
# The project's extras installed here; scripts/lock pins the same ones.
PROJECT_EXTRAS="dev,openvino,cluster,service,serving"

APT_PACKAGES=()
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  APT_PACKAGES+=(dataset-fashion-mnist)
fi
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  APT_PACKAGES+=(postgresql)
fi
# `ip netns`: the cluster tests run their Ray nodes in a network namespace with only loopback.
if ! command -v ip >/dev/null 2>&1; then
  APT_PACKAGES+=(iproute2)
fi
# A real browser for the web UI's tests: Debian's Chromium and its WebDriver.
if ! command -v chromium >/dev/null 2>&1; then
  APT_PACKAGES+=(chromium)
fi
if ! command -v chromedriver >/dev/null 2>&1; then
  APT_PACKAGES+=(chromium-driver)
fi
# A real Prometheus server for the serving tests (they scrape a live deployment's metrics).
if ! command -v prometheus >/dev/null 2>&1; then
  APT_PACKAGES+=(prometheus)
fi
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${APT_PACKAGES[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
fi

PYTHON=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PYTHON="$candidate"; break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "error: Python 3.11 is required (python3.11 or python3 on PATH)" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/env.sh" "$LOCK" \
  "$ROOT/requirements/setup.in" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "==> installing the project into $VENV from $LOCK (torch takes about 2 minutes)" >&2
  # Every install is constrained by the lock: what it pins is installed at exactly that version.
  # pip, the build backend and dill first (requirements/setup.in); the project is then built
  # with that setuptools rather than the newest one in an isolated build environment.
  "$VENV/bin/python" -m pip install -q -c "$LOCK" -r "$ROOT/requirements/setup.in"
  "$VENV/bin/python" -m pip install -q -c "$LOCK" --no-build-isolation \
    -e "$ROOT[$PROJECT_EXTRAS]"
  # Syne Tune's MOASHA, the early-stopping replay's competitor (benchmarks/early_stopping_replay.py),
  # used as a library. Without its declared dependencies (xgboost, statsmodels, ...): they serve
  # parts of Syne Tune the replay does not import (pip may note them as missing on a reinstall).
  "$VENV/bin/python" -m pip install -q --no-deps "syne-tune==0.16.0"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
