#!/usr/bin/env bash
# Sets up everything the multi-client compatibility suite (tests/clients) needs:
#   - kcat (Debian's package, librdkafka 2.0.2),
#   - a Python venv at ${TRIB_VENV:-$HOME/.cache/tributary/venv} with tests/clients/requirements.txt,
#   - kafkajs in tests/clients/node/node_modules,
#   - PostgreSQL's server binaries and systemd-journal-remote (for the pipeline and agent tests).
# Idempotent: each step is skipped when a stamp shows it is already done, so a second run takes
# well under a second. Works as root on a fresh Debian machine (installs kcat, python3-venv and
# nodejs/npm when missing). Does not build the broker: see TRIB_BIN in tests/clients/conftest.py.
#
# Usage: bash scripts/test-env.sh
#        then: "$TRIB_VENV/bin/python" -m pytest tests/clients -q
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLIENTS="$ROOT/tests/clients"
NODE_DIR="$CLIENTS/node"
REQS="$CLIENTS/requirements.txt"
VENV="${TRIB_VENV:-$HOME/.cache/tributary/venv}"

log() { printf 'test-env: %s\n' "$*" >&2; }

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "cannot install $* : apt-get not found; install it by hand"
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

sha256() { sha256sum "$@" | awk '{print $1}' | sha256sum | awk '{print $1}'; }

# --- kcat -----------------------------------------------------------------------------------
if ! command -v kcat >/dev/null 2>&1; then
    apt_install kcat
fi

# --- Python venv ----------------------------------------------------------------------------
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    log "creating venv $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
PY_STAMP="$VENV/.tributary-requirements.sha256"
want="$(sha256 "$REQS")"
have="$(cat "$PY_STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    log "installing $REQS into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQS"
    printf '%s\n' "$want" >"$PY_STAMP"
fi

# --- node + kafkajs -------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
NODE_STAMP="$NODE_DIR/node_modules/.tributary-stamp"
if [ -f "$NODE_DIR/package-lock.json" ]; then
    want="$(sha256 "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")"
    have="$(cat "$NODE_STAMP" 2>/dev/null || true)"
    if [ ! -d "$NODE_DIR/node_modules" ] || [ "$want" != "$have" ]; then
        log "npm ci in $NODE_DIR"
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        printf '%s\n' "$want" >"$NODE_STAMP"
    fi
else
    # No lockfile yet: resolve, write package-lock.json (commit it), and stamp.
    log "npm install in $NODE_DIR (writes package-lock.json: commit it)"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    sha256 "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json" >"$NODE_STAMP"
fi

# --- PostgreSQL (server binaries for the throwaway clusters of the pipeline tests) --------
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    apt_install postgresql
fi

# --- journald (journalctl, and journal-remote to write real journal files for the tests) ----
if ! command -v journalctl >/dev/null 2>&1 || [ ! -x /lib/systemd/systemd-journal-remote ]; then
    apt_install systemd systemd-journal-remote
fi

# --- where things are -----------------------------------------------------------------------
if [ -n "${TRIB_BIN:-}" ]; then
    bin="$TRIB_BIN"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    bin="$CARGO_TARGET_DIR/debug/trib"
else
    bin="$HOME/.cache/tributary/target/debug/trib"
fi
kcat_version="$(kcat -V 2>/dev/null | sed -n 's/^Version \([^ ]*\).*librdkafka \([^ ]*\).*/\1 (librdkafka \2)/p')"
cat <<EOF
test-env: ready
  python venv : $VENV ($("$VENV/bin/python" --version 2>&1))
  python pkgs : $("$VENV/bin/python" -c 'import importlib.metadata as m; print(", ".join(f"{p}=={m.version(p)}" for p in ("confluent-kafka", "kafka-python", "aiokafka", "pytest")))')
  kcat        : $(command -v kcat) ${kcat_version}
  node        : $(command -v node) $(node --version), kafkajs $(node -p "require('$NODE_DIR/node_modules/kafkajs/package.json').version")
  node dir    : $NODE_DIR
  trib binary : $bin $([ -x "$bin" ] && echo "(present)" || echo "(MISSING: build it first)")
  run suite   : "$VENV/bin/python" -m pytest $CLIENTS -q
EOF
