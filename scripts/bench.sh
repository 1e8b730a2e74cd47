#!/usr/bin/env bash
# `make bench`: the benchmark (not a test). Builds the release binary, installs the emulator
# and the Python peer's venv if needed, runs examples/bench.rs, and appends the results to
# docs/BENCHMARKS.md. Arguments go to the bench, e.g. `scripts/bench.sh --rows 20000 --no-peer`.
#
# BENCH_SMOKE=1 is the quick configuration `make test` runs to prove the benchmark works: the
# debug build the tests already made, a small table, nothing recorded, no timing judged.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${BENCH_SMOKE:-0} == 1 ]]; then
  profile=dev dir=debug record=()
else
  profile=release dir=release record=(--record docs/BENCHMARKS.md)
fi
cargo build --locked --profile "$profile" --bin scanfleet --example bench
if [[ ! -x .venv/peer/bin/python ]] || ! cmp -s bench/requirements.txt .venv/peer/.installed; then
  rm -rf .venv/peer
  python3 -m venv .venv/peer
  .venv/peer/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
  cp bench/requirements.txt .venv/peer/.installed
fi
url=$(scripts/emulator.sh start ministack)
trap 'scripts/emulator.sh stop ministack' EXIT
env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" \
  BENCH_EMULATOR_PID="$(cat .run/ministack.pid)" \
  "target/$dir/examples/bench" "${record[@]}" "$@"
