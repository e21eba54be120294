#!/usr/bin/env bash
# The run command: builds the release binary and runs `trib up` on embedded defaults: a broker on
# 127.0.0.1:9092 with its data in ./trib-data, and the quickstart pipeline (demo web logs ->
# parsed into the topic `web-logs` -> server errors into trib-data/out/errors.ndjson), with
# metrics and health on 127.0.0.1:9598. Ctrl-C stops everything cleanly. Extra arguments go to
# `trib up` (pipeline files, --listen, --data-dir, --http; see `trib up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
cargo build --release --locked -p trib
exec "$CARGO_TARGET_DIR/release/trib" up "$@"
