#!/usr/bin/env bash
# `make test`: every test, from a fresh clone. Installs and starts each emulator itself.
#   0. the layout of src/ (scripts/layout.py);
#   1. unit tests and the CLI start-up tests (no AWS needed);
#   2. the deployment checks (scripts/check-deploy.sh: kustomize, Kubernetes and CRD schemas,
#      checkov, hadolint, promtool; it installs its tools, promtool from Debian's prometheus
#      package, the CRD schema packages with npm);
#   3. the integration tests against ministack, then against moto (each started on a free
#      loopback port, stopped by PID afterwards), deploy/aws/scanfleet.yaml's stack among them
#      (tests/stack.rs);
#      and a small run of examples/wait_cost (the README's --wait cost figures);
#   3b. signatures and IAM (tests/auth.rs) against moto in auth mode (`emulator.sh start
#      moto-auth`: every signature recomputed, IAM policies evaluated), as the admin user that
#      start creates; the tests give each scanfleet process role credentials of their own;
#   4. the benchmark in a small, quick configuration, only to prove it runs (no timing judged).
# SCANFLEET_EMULATORS="ministack" limits step 3 to the named emulators (3b runs with moto).
set -euo pipefail
cd "$(dirname "$0")/.."

emulators=${SCANFLEET_EMULATORS:-ministack moto}
running=""
# Every cargo test line is also kept here, to print one closing count at the end.
log=$(mktemp)
cleanup() { for e in $running; do scripts/emulator.sh stop "$e" || true; done; }
trap 'cleanup; rm -f "$log"' EXIT

echo "== layout of src/ (scripts/layout.py: no import circle, at most 7 floors, files of at most 600 product lines)"
python3 scripts/layout.py >/dev/null

echo "== unit tests and CLI tests"
cargo test --locked --no-fail-fast --lib --bins --test cli --test mocks 2>&1 | tee -a "$log"

echo "== deployment checks"
scripts/check-deploy.sh

# The HTTP proxy the proxy test relays through (the test starts and stops it).
scripts/emulator.sh install pproxy

for emulator in $emulators; do
  echo "== integration tests on $emulator"
  url=$(scripts/emulator.sh start "$emulator")
  running="$running $emulator"
  # Local credentials and region for the emulator; nothing here reaches real AWS.
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" \
    SCANFLEET_TEST_EMULATOR="$emulator" \
    cargo test --locked --no-fail-fast --test emulator --test faults --test jobs --test stack --test packed 2>&1 | tee -a "$log"
  # The README's --wait cost figures come from this example; a small run proves it still works.
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" \
    cargo run --locked --quiet --example wait_cost -- --segments 50
  scripts/emulator.sh stop "$emulator"
  running=${running/ $emulator/}
done

if [[ " $emulators " == *" moto "* ]]; then
  echo "== signatures and IAM on moto in auth mode"
  url=$(scripts/emulator.sh start moto-auth)
  running="$running moto-auth"
  # The admin user emulator.sh created within moto's unchecked requests: "KEY_ID SECRET".
  read -r admin_key admin_secret < .run/moto-auth.admin
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID="$admin_key" AWS_SECRET_ACCESS_KEY="$admin_secret" \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" \
    SCANFLEET_TEST_EMULATOR=moto \
    cargo test --locked --no-fail-fast --test auth 2>&1 | tee -a "$log"
  scripts/emulator.sh stop moto-auth
  running=${running/ moto-auth/}
fi

echo "== benchmark smoke run (BENCH_SMOKE=1: debug build, small table, nothing recorded)"
BENCH_SMOKE=1 scripts/bench.sh --rows 2000 --segments 4 --latency-ms 5 --no-scaling

# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
