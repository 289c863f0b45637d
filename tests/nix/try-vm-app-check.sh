# shellcheck shell=bash
# Sourced by tests/nix/check.sh (it defines pass and fail): runs the `nix run .#vm` script as
# the flake builds it (artifacts.tryVmAppText of tests/nix/eval.nix, i.e. modules/try-vm-app.sh
# under the lines try-vm-app.nix puts above it) with bash, as writeShellApplication would
# (errexit, nounset, pipefail), against a fake VM runner: there is no nixpkgs here, so no real
# run-tailjoin-generic-vm; the fake records its argv. Checks how the key file is refused
# (missing, not a file, unreadable, empty, white space only, in the store) and what qemu gets.
#
#   try_vm_app_check EVAL_JSON WORKDIR
try_vm_app_check() {
  local json=$1 dir=$2 script runner store key out rc argv name
  mkdir -p "$dir/vm/bin" "$dir/store" "$dir/keys,with comma" "$dir/a-dir"
  chmod 755 "$dir" "$dir/vm" "$dir/vm/bin" "$dir/keys,with comma"
  runner=$dir/vm/bin/run-fake-vm
  store=$dir/store
  printf '#!/usr/bin/env bash\nprintf "%%s\\0" "$@" >%q\n' "$dir/vm/argv" >"$runner"
  chmod 755 "$runner"
  script=$dir/tailjoin-vm
  if ! python3 - "$json" "$runner" "$store" "$script" <<'PY'
import json, shlex, sys
text = json.load(open(sys.argv[1]))["artifacts"]["tryVmAppText"]
lines = text.split("\n")
assert lines[0].startswith("runner=") and lines[1] == "credential=tailscale-auth-key" and lines[2].startswith("store="), lines[:3]
lines[0] = "runner=" + shlex.quote(sys.argv[2])
lines[2] = "store=" + shlex.quote(sys.argv[3])
with open(sys.argv[4], "w") as f:
    f.write("set -o errexit\nset -o nounset\nset -o pipefail\n" + "\n".join(lines))
PY
  then
    fail "try-vm app: the script text from the evaluation has its runner/credential/store lines"
    return 0
  fi
  chmod 755 "$script"
  key="fake-try-vm-key-$RANDOM$RANDOM"

  # run NAME EXPECTED_RC PATTERN [env VAR=… | args…]: runs the script, checks exit code and
  # stderr, and that the key is in nothing it printed.
  run() {
    local name=$1 want=$2 pattern=$3
    shift 3
    rm -f "$dir/vm/argv"
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" = "$want" ] && grep -q -- "$pattern" <<<"$out" && ! grep -qF -- "$key" <<<"$out"; then
      pass "try-vm app: $name"
    else
      fail "try-vm app: $name (exit $rc, want $want, output must match '$pattern' and not hold the key)" "$out"
    fi
  }
  refused() { # the runner must not have been started
    if [ -e "$dir/vm/argv" ]; then fail "try-vm app: $1 does not start the VM"; else pass "try-vm app: $1 does not start the VM"; fi
  }

  run "no key file named: refused, exit 2" 2 "no auth key file: give its path as the first argument or in TAILJOIN_KEY_FILE" \
    env -u TAILJOIN_KEY_FILE bash "$script"
  refused "no key file"
  run "a missing key file: refused" 2 "auth key file $dir/nope does not exist" bash "$script" "$dir/nope"
  refused "a missing key file"
  run "a directory as key file: refused" 2 "is not a regular file" bash "$script" "$dir/a-dir"
  : >"$dir/empty"
  run "an empty key file: refused" 2 "auth key file $dir/empty is empty" bash "$script" "$dir/empty"
  refused "an empty key file"
  printf ' \n\t\n' >"$dir/blank"
  run "a key file of white space only: refused" 2 "holds only white space" bash "$script" "$dir/blank"
  (umask 077 && printf '%s\n' "$key" >"$store/key")
  run "a key file in the Nix store: refused" 2 "is in the Nix store" bash "$script" "$store/key"
  refused "a key file in the Nix store"
  (umask 077 && printf '%s\n' "$key" >"$dir/keys,with comma/unreadable")
  if [ "$(id -u)" = 0 ]; then
    # root reads anything: the unreadable case runs as nobody.
    chmod 755 "$script"
    run "a key file the user cannot read: refused" 2 "is not readable by" \
      setpriv --reuid=65534 --regid=65534 --clear-groups bash "$script" "$dir/keys,with comma/unreadable"
  else
    chmod 000 "$dir/keys,with comma/unreadable"
    run "a key file the user cannot read: refused" 2 "is not readable by" bash "$script" "$dir/keys,with comma/unreadable"
  fi
  refused "an unreadable key file"

  # A good key file, given as a relative path in a directory with a comma in its name.
  (umask 077 && printf '%s\n' "$key" >"$dir/keys,with comma/key")
  # shellcheck disable=SC2016  # $1 and $2 are the inner shell's
  run "a good key file (argument, relative path): starts the VM" 0 "booting with the key from" \
    bash -c 'cd "$1" && exec bash "$2" "keys,with comma/key" -m 2048' _ "$dir" "$script"
  name="name=opt/io.systemd.credentials/tailscale-auth-key,file=${dir//,/,,}/keys,,with comma/key"
  if [ -e "$dir/vm/argv" ] && mapfile -d '' -t argv <"$dir/vm/argv" \
    && [ "${#argv[@]}" = 4 ] && [ "${argv[0]}" = -fw_cfg ] && [ "${argv[1]}" = "$name" ] \
    && [ "${argv[2]}" = -m ] && [ "${argv[3]}" = 2048 ] && ! grep -qF -- "$key" "$dir/vm/argv"; then
    pass "try-vm app: qemu gets -fw_cfg name=opt/io.systemd.credentials/tailscale-auth-key,file=<absolute path, commas doubled>, the further options, never the key"
  else
    fail "try-vm app: qemu gets -fw_cfg …,file=<absolute path>" "$(tr '\0' '\n' <"$dir/vm/argv" 2>&1)"
  fi
  if grep -q "readable by others" <<<"$out"; then fail "try-vm app: no warning for a mode-600 key file" "$out"; else pass "try-vm app: no warning for a mode-600 key file"; fi

  # From TAILJOIN_KEY_FILE, a file others can read: started, with a warning.
  printf '%s\n' "$key" >"$dir/shared-key"
  chmod 644 "$dir/shared-key"
  run "TAILJOIN_KEY_FILE names the key file; mode 644 gets a warning" 0 "warning: $dir/shared-key is readable by others (mode 644)" \
    env TAILJOIN_KEY_FILE="$dir/shared-key" bash "$script"
  if [ -e "$dir/vm/argv" ] && grep -qF "file=$dir/shared-key" "$dir/vm/argv"; then
    pass "try-vm app: TAILJOIN_KEY_FILE's file is the one qemu gets"
  else
    fail "try-vm app: TAILJOIN_KEY_FILE's file is the one qemu gets" "$(tr '\0' '\n' <"$dir/vm/argv" 2>&1)"
  fi
  run "--help: usage naming the credential" 0 "credential 'tailscale-auth-key' over fw_cfg" bash "$script" --help
}
