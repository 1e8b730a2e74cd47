#!/usr/bin/env bash
# Installs, starts and stops the local AWS emulators the tests and the demo run against.
#
#   scripts/emulator.sh install NAME   # NAME = ministack | moto; creates .venv/NAME (idempotent)
#   scripts/emulator.sh start NAME     # installs if needed, starts on a free loopback port,
#                                      # waits until SQS answers, prints the endpoint URL
#   scripts/emulator.sh stop NAME      # stops the process started by `start`, by its PID
#   scripts/emulator.sh install pproxy # the HTTP proxy (PyPI's pproxy) the proxy test starts
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

usage() { echo "usage: $0 install|start|stop ministack|moto, or $0 install pproxy" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1 name=$2
case $cmd/$name in */ministack|*/moto|install/pproxy) ;; *) usage ;; esac
venv="$venvs/$name"

install() {
  local spec
  case $name in
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
    moto)
      nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$run/$name.log" 2>&1 &
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
  echo "http://127.0.0.1:$port"
}

stop() {
  [[ -f "$run/$name.pid" ]] || return 0
  local pid
  pid=$(cat "$run/$name.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$run/$name.pid" "$run/$name.port"
}

case $cmd in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
