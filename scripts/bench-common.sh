# Sourced by scripts/bench-{agent,index,lake,mirror,pipelines}.sh with a short name for the work
# folder: strict mode, the repository root, the cargo target dir, the release binary in $T (built
# here; TRIB_BIN=path skips the build), a throw-away folder $WORK, and the processes in PIDS
# killed when the script exits (then `bench_cleanup`, when the script defines one).
# `bench_python` sets up the test venv (scripts/test-env.sh) and sets $PY; `cpu_ms PID` is a
# process's CPU time so far.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
export TRIB_VENV="${TRIB_VENV:-$HOME/.cache/tributary/venv}"
if [ -z "${TRIB_BIN:-}" ]; then
    cargo build --release --locked -p trib >/dev/null
fi
T="${TRIB_BIN:-$CARGO_TARGET_DIR/release/trib}"
WORK="$(mktemp -d "/tmp/trib-$1.XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if declare -F bench_cleanup >/dev/null; then bench_cleanup; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cpu_ms() { awk '{print ($14+$15)*10}' "/proc/$1/stat"; }
bench_python() {
    bash scripts/test-env.sh >/dev/null
    PY="$TRIB_VENV/bin/python"
}
