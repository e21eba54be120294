#!/usr/bin/env bash
# The test command: installs what the tests need (kcat, a Python venv with Kafka clients,
# kafkajs), builds the workspace, runs the Rust unit and end-to-end tests, then the
# multi-client compatibility suite against the real broker binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
export TRIB_VENV="${TRIB_VENV:-$HOME/.cache/tributary/venv}"

echo "== environment"
bash scripts/test-env.sh

echo "== build"
cargo build --workspace --all-targets --locked

echo "== rust tests (unit + end-to-end)"
cargo test --workspace --locked -- --test-threads=2
# The Arrow conversion of events is a feature (it keeps Arrow out of builds that do not need it).
cargo test -p trib-pipelines --features arrow --locked --lib arrow

echo "== client compatibility suite"
export TRIB_BIN="$CARGO_TARGET_DIR/debug/trib"
"$TRIB_VENV/bin/python" -m pytest tests/clients -q -p no:cacheprovider
