#!/usr/bin/env bash
# `make demo`: the main job on a local emulator (ministack by default), start to finish.
# Extra arguments go to the demo, e.g. `scripts/demo.sh --rows 50000 --workers 4`.
# DEMO_EMULATOR=moto runs it on moto instead (keep --rows in the hundreds there).
set -euo pipefail
cd "$(dirname "$0")/.."
emulator=${DEMO_EMULATOR:-ministack}

cargo build --locked --release --bin scanfleet --example demo
url=$(scripts/emulator.sh start "$emulator")
trap 'scripts/emulator.sh stop "$emulator"' EXIT
env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" \
  target/release/examples/demo "$@"
