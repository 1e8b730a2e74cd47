#!/usr/bin/env bash
# `make test`: every test, from a fresh clone. Installs and starts each emulator itself.
#   1. unit tests and the CLI start-up tests (no AWS needed);
#   2. the deployment checks (scripts/check-deploy.sh: kustomize, Kubernetes schemas, checkov,
#      hadolint, promtool; it installs its tools, promtool from Debian's prometheus package);
#   3. the integration tests against ministack, then against moto (each started on a free
#      loopback port, stopped by PID afterwards).
# SCANFLEET_EMULATORS="ministack" limits step 2 to the named emulators.
set -euo pipefail
cd "$(dirname "$0")/.."

emulators=${SCANFLEET_EMULATORS:-ministack moto}
running=""
cleanup() { for e in $running; do scripts/emulator.sh stop "$e" || true; done; }
trap cleanup EXIT

echo "== unit tests and CLI tests"
cargo test --locked --no-fail-fast --lib --bins --test cli --test mocks

echo "== deployment checks"
scripts/check-deploy.sh

for emulator in $emulators; do
  echo "== integration tests on $emulator"
  url=$(scripts/emulator.sh start "$emulator")
  running="$running $emulator"
  # Local credentials and region for the emulator; nothing here reaches real AWS.
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ENDPOINT_URL="$url" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    SCANFLEET_TEST_EMULATOR="$emulator" \
    cargo test --locked --no-fail-fast --test emulator --test faults --test jobs
  scripts/emulator.sh stop "$emulator"
  running=${running/ $emulator/}
done
