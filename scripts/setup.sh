#!/usr/bin/env bash
# Prepare a machine for fakeproc: system packages, .venv, editable install.
# Idempotent and quick when nothing changed; safe non-interactively (CI=true, no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
VENV=.venv
STAMP=$VENV/.fakeproc-install-stamp

# --- interpreter: python3.11, else python3 if it is 3.11+ ---------------------
PY=
for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        PY=$(command -v "$cand"); break
    fi
done
[[ -n $PY ]] || { say "error: need python3.11 or a python3 >= 3.11 on PATH"; exit 1; }

# --- system packages -----------------------------------------------------------
pkgs=(libfuse3-dev fuse3 pkg-config numactl hwloc-nox util-linux procps gcc)
# Debian's own python ships venv/ensurepip and the C headers separately.
"$PY" -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
"$PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || pkgs+=(python3-dev)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing system packages: ${missing[*]}"
    as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0)
    as_root "${apt[@]}" update </dev/null
    as_root "${apt[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

# --- virtualenv ------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "creating $VENV with $("$PY" --version) ($PY)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

# --- editable install, redone only when its inputs change ------------------------
# Inputs: pyproject.toml, setup.py and the native sources (git-tracked or untracked
# but not ignored, so build products such as *.so and the generated .c do not count).
inputs() {
    local dirs=(fakeproc/kernel/native fakeproc/fs/native)
    {
        echo pyproject.toml; echo setup.py
        if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git ls-files --cached --others --exclude-standard -- "${dirs[@]}"
        else
            find "${dirs[@]}" -type f ! -name '*.so' ! -name '*.o' ! -path '*/__pycache__/*'
        fi
    } | sort -u | while read -r f; do if [[ -f $f ]]; then echo "$f"; fi; done
}
want=$(inputs | xargs -d '\n' sha256sum | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(<"$STAMP") == "$want" ]]; then
    say "up to date"
    exit 0
fi
say "pip install -e '.[test]' (inputs changed or first install)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' </dev/null
echo "$want" >"$STAMP"
say "done"
