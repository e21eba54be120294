#!/usr/bin/env bash
# The run command: builds the release binary and starts the broker on embedded defaults
# (127.0.0.1:9092, data in ./data, metrics and health on 127.0.0.1:9644). Extra flags are
# passed to `trib broker` (see `trib broker --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
cargo build --release --locked -p trib
exec "$CARGO_TARGET_DIR/release/trib" broker "$@"
