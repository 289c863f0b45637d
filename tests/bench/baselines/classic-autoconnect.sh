#!/usr/bin/env bash
# Baseline (c) of tests/bench: the classic one-shot "autoconnect" unit script that many
# tutorials show: wait a fixed 2 s for tailscaled to settle, ask the CLI for the state, pipe it
# through jq, and run `tailscale up` with the key unless already Running. Then exit.
#
#   classic-autoconnect.sh SOCKET LOGIN_SERVER KEY_FILE HOSTNAME
#
# Written for the benchmark only; the key is passed as `file:PATH`, never on the command line.
set -u
socket=$1 login_server=$2 key_file=$3 hostname=$4
ts() { tailscale --socket="$socket" "$@"; }

sleep 2
status=$(ts status --json | jq -r .BackendState)
if [ "$status" = "Running" ]; then
  echo "already Running"
  exit 0
fi
echo "state is ${status:-unknown}; running tailscale up"
exec tailscale --socket="$socket" up --login-server="$login_server" \
  --auth-key="file:$key_file" --hostname="$hostname"
