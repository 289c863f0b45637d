#!/usr/bin/env bash
# Baseline (d) of tests/bench: behaves like nixpkgs' tailscaled-autoconnect unit script: every
# 0.5 s it asks the CLI for BackendState (`tailscale status --json --peers=false | jq`); on a
# state change to NeedsLogin, NeedsMachineAuth or Stopped it runs `tailscale up` with the key;
# on Running it exits.
#
#   poll-autoconnect.sh SOCKET LOGIN_SERVER KEY_FILE HOSTNAME
#
# With KEEP_WATCHING=1 it does not exit on Running but keeps polling every 0.5 s, so that it
# also brings a restarted tailscaled back (how a polling script has to be written to recover;
# the benchmark's recovery and idle measurements use this mode).
# Written for the benchmark only; the key is passed as `file:PATH`, never on the command line.
set -u
socket=$1 login_server=$2 key_file=$3 hostname=$4
keep=${KEEP_WATCHING:-0}
trap 'exit 0' TERM INT

get_state() {
  tailscale --socket="$socket" status --json --peers=false 2>/dev/null | jq -r '.BackendState'
}

last=""
while :; do
  state=$(get_state)
  if [ "$state" != "$last" ]; then
    case "$state" in
      NeedsLogin | NeedsMachineAuth | Stopped)
        echo "state $state: sending the auth key"
        if ! tailscale --socket="$socket" up --login-server="$login_server" \
          --auth-key="file:$key_file" --hostname="$hostname"; then
          state="" # try again at the next poll
        fi
        ;;
      Running)
        echo "Running"
        [ "$keep" = 1 ] || exit 0
        ;;
      *)
        echo "state ${state:-unknown}: waiting"
        ;;
    esac
  fi
  last=$state
  sleep 0.5
done
