#!/usr/bin/env bash
# Installs, starts and stops the local AWS emulators the tests and the demo run against.
#
#   scripts/emulator.sh install NAME   # NAME = ministack | moto; creates .venv/NAME (idempotent)
#   scripts/emulator.sh start NAME     # installs if needed, starts on a free loopback port,
#                                      # waits until SQS answers, prints the endpoint URL
#   scripts/emulator.sh stop NAME      # stops the process started by `start`, by its PID
#   scripts/emulator.sh install pproxy # the HTTP proxy (PyPI's pproxy) the proxy test starts
#   scripts/emulator.sh start moto-auth  # moto checking signatures and IAM policies (see below);
#                                        # its own port, PID file and log, beside a plain moto
#
# moto-auth: moto started with INITIAL_NO_AUTH_ACTION_COUNT=N serves its first N service
# requests (every SQS, DynamoDB, IAM or STS action; the /moto-api endpoints are not counted)
# without checking them, then recomputes every request's SigV4 signature with botocore and
# evaluates the caller's IAM policies. N is spent here, exactly, so nothing depends on what a
# test sends first: 1 for the readiness ListQueues below (only an answered probe reaches moto's
# counter; a refused connection does not), then 3 to make the principal the tests set up with,
# an IAM user `scanfleet-admin` (CreateUser, PutUserPolicy with Action/Resource "*",
# CreateAccessKey). Its key is written to .run/moto-auth.admin as "KEY_ID SECRET" (one line),
# for the tests to run as (scripts/test.sh passes it as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY).
# Start-up then proves the count was right: the next request, with a wrong secret, must be
# refused with SignatureDoesNotMatch (one more unchecked request and it would pass), and the
# admin key then accepted (one fewer, and CreateAccessKey would already have been refused).
# Everything else (queues, tables, the worker's users, roles and policies) is created by that
# authorised admin, checked like any caller, so tests may run in any order, in parallel, and
# again on the same moto: none of them spends the unchecked budget.
#
# Each emulator gets its own virtual environment because they pin clashing botocore versions.
# Both keep all state in memory: a restart is an empty AWS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venvs="$root/.venv"
run="$root/.run"
MINISTACK_VERSION=1.5.33
MOTO_VERSION=5.2.5
PPROXY_VERSION=2.7.9

# Requests moto-auth serves unchecked: the readiness probe and the admin user's three calls.
MOTO_AUTH_FREE_REQUESTS=4

usage() { echo "usage: $0 install|start|stop ministack|moto|moto-auth, or $0 install pproxy" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1 name=$2
case $cmd/$name in */ministack|*/moto|*/moto-auth|install/pproxy) ;; *) usage ;; esac
# moto-auth is moto, from the same virtual environment; only its run files are its own.
package=${name%-auth}
venv="$venvs/$package"

install() {
  local spec
  case $package in
    ministack) spec="ministack==$MINISTACK_VERSION" ;;
    moto) spec="moto[server]==$MOTO_VERSION" ;;
    pproxy) spec="pproxy==$PPROXY_VERSION" ;;
  esac
  if [[ -f "$venv/.installed" && $(cat "$venv/.installed") == "$spec" ]]; then
    return 0
  fi
  echo "installing $spec into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
  echo "$spec" > "$venv/.installed"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  install
  mkdir -p "$run"
  if [[ -f "$run/$name.pid" ]] && kill -0 "$(cat "$run/$name.pid")" 2>/dev/null; then
    echo "http://127.0.0.1:$(cat "$run/$name.port")"
    return 0
  fi
  local port
  port=$(free_port)
  case $name in
    ministack)
      BIND_HOST=127.0.0.1 GATEWAY_PORT=$port MINISTACK_HOST=127.0.0.1 \
        nohup "$venv/bin/python" -m ministack >"$run/$name.log" 2>&1 &
      ;;
    # Through scripts/moto_server.py: moto_server with DynamoDB's item writes made atomic (its
    # header says why).
    moto)
      nohup "$venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$run/$name.log" 2>&1 &
      ;;
    moto-auth)
      INITIAL_NO_AUTH_ACTION_COUNT=$MOTO_AUTH_FREE_REQUESTS \
        nohup "$venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$run/$name.log" 2>&1 &
      ;;
  esac
  local pid=$!
  echo "$pid" > "$run/$name.pid"
  echo "$port" > "$run/$name.port"
  # Ready means a real ListQueues call answers, not merely that the port accepts connections.
  local deadline=$((SECONDS + 60))
  until NO_PROXY=127.0.0.1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 \
      "$venv/bin/python" - "http://127.0.0.1:$port" >/dev/null 2>&1 <<'PY'
import sys, botocore.session
botocore.session.get_session().create_client("sqs", endpoint_url=sys.argv[1]).list_queues()
PY
  do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during start-up; its log:" >&2
      cat "$run/$name.log" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      echo "$name did not answer ListQueues within 60 s; its log:" >&2
      tail -n 50 "$run/$name.log" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.3
  done
  if [[ $name == moto-auth ]]; then
    if ! bootstrap_admin "http://127.0.0.1:$port" >"$run/$name.admin.tmp"; then
      echo "moto-auth: setting up the admin user failed; moto's log:" >&2
      tail -n 50 "$run/$name.log" >&2
      kill "$pid" 2>/dev/null || true
      rm -f "$run/$name.admin.tmp"
      exit 1
    fi
    mv "$run/$name.admin.tmp" "$run/$name.admin"
  fi
  echo "http://127.0.0.1:$port"
}

# Spends the rest of moto-auth's unchecked requests on an admin user, prints "KEY_ID SECRET",
# then checks that auth mode is now on (see the top of this file).
bootstrap_admin() {
  NO_PROXY=127.0.0.1 AWS_ACCESS_KEY_ID=bootstrap AWS_SECRET_ACCESS_KEY=bootstrap AWS_DEFAULT_REGION=us-east-1 \
    "$venv/bin/python" - "$1" <<'PY'
import json, sys, botocore.session
from botocore.exceptions import ClientError
url = sys.argv[1]
session = botocore.session.get_session()
iam = session.create_client("iam", endpoint_url=url)
iam.create_user(UserName="scanfleet-admin")
iam.put_user_policy(UserName="scanfleet-admin", PolicyName="everything", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="scanfleet-admin")["AccessKey"]
def sqs(secret):
    return session.create_client("sqs", endpoint_url=url, aws_access_key_id=key["AccessKeyId"],
                                 aws_secret_access_key=secret)
# The first checked request: refused only if the count was not too high; then accepted only
# if it was not too low (CreateAccessKey above would have been refused).
try:
    sqs(key["SecretAccessKey"] + "x").list_queues()
    sys.exit("a wrong secret was accepted: moto served more requests unchecked than counted")
except ClientError as e:
    # moto answers an auth failure with an XML error body, even to SQS's JSON protocol, so
    # botocore reports the code as "403": the code is looked for in the whole message.
    if "SignatureDoesNotMatch" not in str(e):
        raise
sqs(key["SecretAccessKey"]).list_queues()
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
}

stop() {
  [[ -f "$run/$name.pid" ]] || return 0
  local pid
  pid=$(cat "$run/$name.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$run/$name.pid" "$run/$name.port" "$run/$name.admin"
}

case $cmd in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
