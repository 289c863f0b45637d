#!/usr/bin/env bash
# Checks the Nix side without nixpkgs: every .nix file parses; deadnix, alejandra's formatting
# and tests/nix/lint (our statix-style lints) pass; flake.lock pins what DESIGN.md says; and,
# with the nixpkgs lib (a checkout of github:nix-community/nixpkgs.lib at $NIXPKGS_LIB), the
# module evaluation tests (tests/nix/eval.nix) run, the JSON configs the module writes pass the
# real agent's `tailjoin check-config`, and the unit the module renders equals
# tests/lib/render-unit.py's rendering of tailjoin-unit.json; the provisioner module's configs
# pass `tailjoin-provisioner --check` (and the ones its assertions refuse fail it with exit 2);
# the `nix run .#vm` script runs against a fake VM runner (try-vm-app-check.sh).
# The agent is $TAILJOIN_BIN when set; the provisioner is $TAILJOIN_PROVISIONER_BIN when set,
# else the tailjoin-provisioner next to $TAILJOIN_BIN when that is set. What is not given is
# built from agent/ (`cargo build --release` there builds the workspace: both binaries).
#
#   tests/nix/check.sh              check
#   tests/nix/check.sh --fix        format the .nix files first
#   tests/nix/check.sh --eval-only  only the module evaluation (check.sh's own test of the
#                                   missing-lib rule runs this)
#
# NIXPKGS_LIB: unset = $TAILJOIN_CACHE/nixpkgs-lib (~/.cache/tailjoin/nixpkgs-lib) when that
# exists; empty = no lib. Without a lib the evaluation is skipped loudly, except when CI=true:
# then the run fails, saying how to fetch the lib.
#
# Installs what it lacks: nix-bin (apt), deadnix (crates.io), the formatter helper
# tests/nix/fmt (crates.io's alejandra library) and the linter tests/nix/lint (our statix-style
# lints on crates.io's rnix, the parser statix uses; statix itself is in no registry reachable
# here, and is run too when $STATIX or PATH has it).
# Last line: `N passed, M failed[, K skipped]`; exit 1 on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
CACHE=${TAILJOIN_CACHE:-$HOME/.cache/tailjoin}
TOOLS=$CACHE/nixtools
DEADNIX_VERSION=1.3.1
FIX=0 EVAL_ONLY=0
case "${1:-}" in
  --fix) FIX=1 ;;
  --eval-only) EVAL_ONLY=1 ;;
  "") ;;
  *) echo "usage: tests/nix/check.sh [--fix|--eval-only]" >&2; exit 2 ;;
esac
# Unset: the cache path when it holds the lib. Set (even to empty): as given.
if [ -z "${NIXPKGS_LIB+set}" ] && [ -d "$CACHE/nixpkgs-lib" ]; then export NIXPKGS_LIB=$CACHE/nixpkgs-lib; fi
LIB_FIX="git clone https://github.com/nix-community/nixpkgs.lib $CACHE/nixpkgs-lib"

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "ok    $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  [ -n "${2:-}" ] && sed 's/^/      /' <<<"$2"
  return 0
}
skip() { skipped=$((skipped + 1)); echo "SKIP  $1"; }
loud() {
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  for line in "$@"; do echo "!!! $line"; done
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}
die() {
  echo "tests/nix/check.sh: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

# ------------------------------------------------------------------ tools
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "need $* but there is no apt-get"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 || die "apt-get install $* failed"
}

for d in "$HOME/.cargo/bin" "$TOOLS/bin"; do
  case ":$PATH:" in *":$d:"*) ;; *) export PATH="$d:$PATH" ;; esac
done

command -v nix-instantiate >/dev/null 2>&1 || {
  echo "installing nix-bin (apt) for nix-instantiate" >&2
  apt_install nix-bin
}
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (see tests/lib/ensure-deps.sh)"

# Everything but the module evaluation: lint tools, then format, parse, lint, the lock file.
static_checks() {
  if ! deadnix --version 2>/dev/null | grep -q "deadnix $DEADNIX_VERSION"; then
    echo "installing deadnix $DEADNIX_VERSION from crates.io into $TOOLS" >&2
    cargo install --quiet --locked --root "$TOOLS" "deadnix@$DEADNIX_VERSION" >&2 || die "cargo install deadnix failed"
  fi

  # alejandra's CLI is not on crates.io, its library is: tests/nix/fmt wraps it.
  NIXFMT_TARGET=$CACHE/nix-fmt-target
  NIXFMT=$NIXFMT_TARGET/release/tailjoin-nix-fmt
  CARGO_TARGET_DIR=$NIXFMT_TARGET cargo build --quiet --release --locked --manifest-path tests/nix/fmt/Cargo.toml >&2 \
    || die "cannot build tests/nix/fmt (the alejandra formatter)"

  # Our statix-style lints on rnix's syntax tree (statix itself is in no registry reachable
  # here: crates.io's crate named statix is an unrelated HTTP server).
  NIXLINT_TARGET=$CACHE/nix-lint-target
  NIXLINT=$NIXLINT_TARGET/release/tailjoin-nix-lint
  CARGO_TARGET_DIR=$NIXLINT_TARGET cargo build --quiet --release --locked --manifest-path tests/nix/lint/Cargo.toml >&2 \
    || die "cannot build tests/nix/lint (the Nix linter)"

  # The real statix, when someone has it: $STATIX or on PATH.
  STATIX_BIN=${STATIX:-}
  if [ -z "$STATIX_BIN" ]; then STATIX_BIN=$(command -v statix 2>/dev/null || true); fi
  if [ -n "$STATIX_BIN" ] && ! "$STATIX_BIN" check --help 2>/dev/null | grep -qi "lints"; then
    echo "ignoring $STATIX_BIN: it is not the Nix linter statix" >&2
    STATIX_BIN=""
  fi

  mapfile -t NIX_FILES < <(git ls-files -co --exclude-standard -- '*.nix' | grep -v '^agent/target/' | sort)
  [ "${#NIX_FILES[@]}" -gt 0 ] || die "no .nix files found"

  # ------------------------------------------------------------------ format, parse, lint
  if [ $FIX = 1 ]; then
    "$NIXFMT" "${NIX_FILES[@]}" || true
  fi

  for f in "${NIX_FILES[@]}"; do
    if out=$(nix-instantiate --parse "$f" 2>&1 >/dev/null); then pass "parses: $f"; else fail "parses: $f" "$out"; fi
  done

  if out=$("$NIXFMT" --check "${NIX_FILES[@]}" 2>&1); then
    pass "alejandra formatting (${#NIX_FILES[@]} files)"
  else
    fail "alejandra formatting (fix: tests/nix/check.sh --fix)" "$out"
  fi

  if out=$(deadnix --fail "${NIX_FILES[@]}" 2>&1); then pass "deadnix --fail"; else fail "deadnix --fail" "$out"; fi

  if out=$(CARGO_TARGET_DIR=$NIXLINT_TARGET cargo test --quiet --release --locked --manifest-path tests/nix/lint/Cargo.toml 2>&1); then
    pass "tests/nix/lint's own tests: each lint reports its pattern and leaves the clean forms alone"
  else
    fail "tests/nix/lint's own tests" "$(tail -30 <<<"$out")"
  fi
  # Our two Rust helpers (the formatter's and the linter's crates) follow the agent's rules.
  for crate in tests/nix/fmt tests/nix/lint; do
    target=$NIXFMT_TARGET
    [ "$crate" = tests/nix/lint ] && target=$NIXLINT_TARGET
    if out=$(cargo fmt --check --manifest-path "$crate/Cargo.toml" 2>&1 \
      && CARGO_TARGET_DIR=$target cargo clippy --quiet --release --locked --all-targets \
        --manifest-path "$crate/Cargo.toml" -- -D warnings 2>&1); then
      pass "$crate: cargo fmt --check and clippy -D warnings"
    else
      fail "$crate: cargo fmt --check and clippy -D warnings" "$(tail -30 <<<"$out")"
    fi
  done
  bad=$(mktemp --suffix .nix)
  printf 'x: {\n  a = a;\n  b = x.b;\n}\n' >"$bad"
  out=$("$NIXLINT" "$bad" 2>&1)
  rc=$?
  rm -f "$bad"
  if [ $rc = 1 ] && grep -q ":2:3: \[manual-inherit\]" <<<"$out" && grep -q ":3:3: \[manual-inherit-from\]" <<<"$out"; then
    pass "tests/nix/lint exits 1 on a file with findings, naming line, column and lint"
  else
    fail "tests/nix/lint exits 1 on a file with findings, naming line, column and lint (exit $rc)" "$out"
  fi
  if out=$("$NIXLINT" "${NIX_FILES[@]}" 2>&1); then
    pass "tests/nix/lint, statix-style lints (${#NIX_FILES[@]} files: $("$NIXLINT" 2>&1 | sed -n 's/^lints: //p'))"
  else
    fail "tests/nix/lint, statix-style lints (tests/nix/lint/src/lib.rs says what each means)" "$out"
  fi

  if [ -n "$STATIX_BIN" ]; then
    statix_out="" statix_ok=1
    for f in "${NIX_FILES[@]}"; do
      if ! o=$("$STATIX_BIN" check --format errfmt "$f" 2>&1); then statix_ok=0; statix_out+="$o"$'\n'; fi
    done
    if [ $statix_ok = 1 ]; then pass "statix check"; else fail "statix check" "$statix_out"; fi
  else
    echo "      (the real statix is not installed, as in no registry reachable here; tests/nix/lint ran"
    echo "       in its place. Set STATIX=/path/to/statix, or put it on PATH, to run it as well.)"
  fi

  # ------------------------------------------------------------------ flake.lock and inputs
  if out=$(python3 - <<'EOF' 2>&1
import json
lock = json.load(open("flake.lock"))
assert lock["version"] == 7 and lock["root"] == "root", "lock version/root"
assert lock["nodes"]["root"] == {"inputs": {"nixpkgs": "nixpkgs"}}, "nixpkgs must be the only input"
n = lock["nodes"]["nixpkgs"]
assert n["locked"] == {
    "lastModified": 1783549019,
    "narHash": "sha256-0XnckG4ZhBmAsYa9mLuEIFowBG0fDGPLHduQGsbMS4A=",
    "owner": "NixOS", "repo": "nixpkgs",
    "rev": "74cc63f702f7d60a557e152a57b40fb1fd0f72ac", "type": "github",
}, n["locked"]
assert n["original"] == {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"}, n["original"]
EOF
  ); then pass "flake.lock pins nixpkgs as DESIGN.md says"; else fail "flake.lock pins nixpkgs as DESIGN.md says" "$out"; fi

  if out=$(nix-instantiate --eval --strict --json -E '(import ./flake.nix).inputs' 2>&1) \
    && [ "$out" = '{"nixpkgs":{"url":"github:NixOS/nixpkgs/nixos-26.05"}}' ]; then
    pass "flake.nix: nixpkgs is the only input and follows the locked ref"
  else
    fail "flake.nix: nixpkgs is the only input and follows the locked ref" "$out"
  fi

  # ------------------------------------------------------------------ unit renderer (no lib needed)
  if out=$(python3 tests/lib/render-unit.py modules/tailjoin-unit.json --set Service.ExecStart=/x 2>&1) \
    && grep -qx 'CapabilityBoundingSet=' <<<"$out" && grep -qx 'NoNewPrivileges=true' <<<"$out" \
    && grep -qx 'RestrictAddressFamilies=AF_INET6' <<<"$out" && grep -qx 'StartLimitBurst=5' <<<"$out" \
    && grep -qx 'ExecStart=/x' <<<"$out" && grep -qx 'WantedBy=multi-user.target' <<<"$out"; then
    pass "render-unit.py renders tailjoin-unit.json (list, bool, number, empty string)"
  else
    fail "render-unit.py renders tailjoin-unit.json" "$out"
  fi
}

[ $EVAL_ONLY = 1 ] || static_checks

# ------------------------------------------------------------------ module evaluation
if out=$(env -u NIXPKGS_LIB nix-instantiate --eval --strict --json tests/nix/eval.nix 2>&1); then
  fail "eval.nix refuses to run without NIXPKGS_LIB" "$out"
elif grep -q "NIXPKGS_LIB is not set" <<<"$out"; then
  pass "eval.nix refuses to run without NIXPKGS_LIB, saying so"
else
  fail "eval.nix refuses to run without NIXPKGS_LIB, saying so" "$out"
fi

# A missing lib is a loud skip on a person's machine and a failure in CI (CI=true), where a
# green run must mean the evaluation ran. check.sh tests this rule on itself (--eval-only).
if [ $EVAL_ONLY = 0 ]; then
  for ci in true ""; do
    out=$(CI=$ci NIXPKGS_LIB="" bash "$ROOT/tests/nix/check.sh" --eval-only 2>&1)
    rc=$?
    if [ "$ci" = true ]; then
      what="CI=true with no nixpkgs lib: the run fails, saying how to fetch it"
      if [ $rc = 1 ] && grep -q "^FAIL  module evaluation tests" <<<"$out" && grep -qF "$LIB_FIX" <<<"$out" \
        && tail -n1 <<<"$out" | grep -q " 1 failed, 0 skipped$"; then pass "$what"; else fail "$what (exit $rc)" "$out"; fi
    else
      what="a person's run with no nixpkgs lib: a loud skip, exit 0"
      if [ $rc = 0 ] && grep -q "^SKIP  module evaluation tests" <<<"$out" && grep -q "^!!! MODULE EVALUATION TESTS WERE NOT RUN" <<<"$out" \
        && grep -qF "$LIB_FIX" <<<"$out"; then pass "$what"; else fail "$what (exit $rc)" "$out"; fi
    fi
  done
fi

if [ -n "${NIXPKGS_LIB+set}" ]; then
  LIB_WHY="NIXPKGS_LIB is set but empty"
else
  LIB_WHY="NIXPKGS_LIB is unset and $CACHE/nixpkgs-lib does not exist"
fi
if [ -z "${NIXPKGS_LIB:-}" ] && [ "${CI:-}" = true ]; then
  fail "module evaluation tests (tests/nix/eval.nix): CI=true and no nixpkgs lib" \
    "$(printf '%s\n' "No nixpkgs lib: $LIB_WHY; in CI the evaluation must run." \
      "Fix: fetch github:nix-community/nixpkgs.lib into the cache path:" "  $LIB_FIX" \
      "(or set NIXPKGS_LIB=/path/to/a/checkout), then run tests/nix/check.sh again.")"
elif [ -z "${NIXPKGS_LIB:-}" ]; then
  loud "MODULE EVALUATION TESTS WERE NOT RUN: no nixpkgs lib ($LIB_WHY)." \
    "They need a checkout of github:nix-community/nixpkgs.lib, which no package registry" \
    "carries. To run them:" \
    "  $LIB_FIX" \
    "(In CI, CI=true, this is a failure, not a skip.)"
  skip "module evaluation tests (tests/nix/eval.nix)"
  skip "JSON configs pass tailjoin check-config"
  skip "provisioner JSON configs pass tailjoin-provisioner --check"
  skip "module's unit equals render-unit.py's rendering of tailjoin-unit.json"
  skip "docs/options.md is current"
else
  if out=$(tests/nix/gen-options.sh --check 2>&1); then
    pass "$(tail -n1 <<<"$out")"
  else
    fail "docs/options.md is stale: regenerate it with tests/nix/gen-options.sh" "$out"
  fi
  # The staleness check catches a changed description (a copy with one line edited).
  stale=$(mktemp)
  sed '0,/^- Type: /s//- Type: (edited) /' docs/options.md >"$stale"
  out=$(tests/nix/gen-options.sh --check "$stale" 2>&1)
  rc=$?
  rm -f "$stale"
  if [ $rc = 1 ] && grep -q "stale.*tests/nix/gen-options.sh" <<<"$out" && grep -q '^-- Type: (edited)' <<<"$out"; then
    pass "gen-options.sh --check fails on an edited copy of docs/options.md, naming the command"
  else
    fail "gen-options.sh --check fails on an edited copy of docs/options.md, naming the command (exit $rc)" "$out"
  fi

  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if ! nix-instantiate --eval --strict --json tests/nix/eval.nix >"$work/eval.json" 2>"$work/eval.err"; then
    fail "tests/nix/eval.nix evaluates" "$(tail -40 "$work/eval.err")"
  else
    echo "      (nixpkgs lib $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["artifacts"]["libVersion"])' "$work/eval.json") from $NIXPKGS_LIB)"
    while IFS=$'\t' read -r ok name detail; do
      if [ "$ok" = 1 ]; then pass "eval: $name"; else fail "eval: $name" "$detail"; fi
    done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("1" if r["ok"] else "0", r["name"], r["detail"], sep="\t")
' "$work/eval.json")

    # The eval's artifacts as files: the configs to check, the module's unit and its instance keys.
    python3 - "$work" <<'EOF'
import json, sys
w = sys.argv[1]
a = json.load(open(f"{w}/eval.json"))["artifacts"]
for name, cfg in a["configs"].items():
    json.dump(cfg, open(f"{w}/config-{name}.json", "w"))
for name, cfg in a["provisionerConfigs"].items():
    json.dump(cfg, open(f"{w}/prov-{name}.json", "w"))
for name, bad in a["badProvisionerConfigs"].items():
    json.dump(bad["config"], open(f"{w}/badprov-{name}.json", "w"))
    open(f"{w}/badprov-{name}.field", "w").write(bad["field"])
for name, bad in a["badConfigs"].items():
    json.dump(bad["config"], open(f"{w}/badcfg-{name}.json", "w"))
    open(f"{w}/badcfg-{name}.field", "w").write(bad["field"])
open(f"{w}/module.service", "w").write(a["unitText"])
with open(f"{w}/sets", "w") as f:
    for k, v in sorted(a["instance"].items()):
        for item in v if isinstance(v, list) else [v]:
            f.write(f"Service.{k}={item}\n")
EOF
    # Every key source whose JSON shape is the agent's, not the module's, must be among them.
    for src in http kernel_cmdline headscale tailscale_oauth; do
      if python3 - "$work" "$src" <<'EOF'
import glob, json, sys
cfgs = [json.load(open(f)) for f in glob.glob(f"{sys.argv[1]}/config-*.json")]
sys.exit(0 if any(sys.argv[2] in (c.get("auth_key") or {}) for c in cfgs) else 1)
EOF
      then
        pass "the configs checked include the $src key source"
      else
        fail "the configs checked include the $src key source" "no artifacts.configs entry has auth_key.$src"
      fi
    done
    # Every push reporter, and the pull side, must be among them too.
    for field in listen textfile webhook healthchecks uptime_kuma; do
      if python3 - "$work" "$field" <<'EOF'
import glob, json, sys
cfgs = [json.load(open(f)) for f in glob.glob(f"{sys.argv[1]}/config-*.json")]
sys.exit(0 if any(sys.argv[2] in (c.get("health") or {}) for c in cfgs) else 1)
EOF
      then
        pass "the configs checked include health.$field"
      else
        fail "the configs checked include health.$field" "no artifacts.configs entry has health.$field"
      fi
    done

    # The binaries the modules' build-time checks run. The agent (check-config): $TAILJOIN_BIN
    # when set. The provisioner (--check): $TAILJOIN_PROVISIONER_BIN when set, else the
    # tailjoin-provisioner next to $TAILJOIN_BIN when that is set. What is not given is built
    # here: `cargo build --release` in agent/ builds the workspace, both binaries, into
    # agent/target/release.
    TJ=${TAILJOIN_BIN:-}
    TJP=${TAILJOIN_PROVISIONER_BIN:-}
    TJ_FROM="TAILJOIN_BIN=$TJ"
    TJP_FROM="TAILJOIN_PROVISIONER_BIN=$TJP"
    if [ -z "$TJP" ] && [ -n "$TJ" ]; then
      TJP=$(dirname "$TJ")/tailjoin-provisioner
      TJP_FROM="$TJP (the tailjoin-provisioner next to TAILJOIN_BIN)"
    fi
    if [ -z "$TJ" ] || [ -z "$TJP" ]; then
      if out=$(cargo build --quiet --release --locked --manifest-path agent/Cargo.toml 2>&1); then
        if [ -z "$TJ" ]; then TJ=agent/target/release/tailjoin TJ_FROM="the built agent/target/release/tailjoin"; fi
        if [ -z "$TJP" ]; then TJP=agent/target/release/tailjoin-provisioner TJP_FROM="the built agent/target/release/tailjoin-provisioner"; fi
      else
        fail "build the agent and the provisioner (cargo build --release in agent/)" "$out"
        TJ="" TJP=""
      fi
    fi
    # usable PATH WHAT: PATH is given (empty after a failed build, already reported) and is an
    # executable.
    usable() {
      [ -n "$1" ] || return 1
      [ -x "$1" ] && return 0
      fail "$2 is an executable" "no such executable"
      return 1
    }

    if usable "$TJ" "$TJ_FROM"; then
      echo "      (agent: $TJ)"
      for c in "$work"/config-*.json; do
        n=$(basename "$c" .json)
        if out=$("$TJ" check-config "$c" 2>&1); then pass "tailjoin check-config accepts the module's $n"; else fail "tailjoin check-config accepts the module's $n" "$out"; fi
      done
      # The settings are the agent's to check: what it would refuse at boot fails the build.
      for c in "$work"/badcfg-*.json; do
        n=$(basename "$c" .json)
        field=$(cat "${c%.json}.field")
        out=$("$TJ" check-config "$c" 2>&1)
        rc=$?
        if [ $rc = 2 ] && grep -q "$field" <<<"$out"; then
          pass "tailjoin check-config rejects settings $n naming $field, exit 2"
        else
          fail "tailjoin check-config rejects settings $n naming $field, exit 2 (got $rc)" "$out"
        fi
      done
    fi

    if usable "$TJP" "$TJP_FROM"; then
      echo "      (provisioner: $TJP)"
      # The provisioner module's configs, as its build-time check runs them.
      for c in "$work"/prov-*.json; do
        n=$(basename "$c" .json)
        if out=$("$TJP" --config "$c" --check 2>&1); then
          pass "tailjoin-provisioner --check accepts the provisioner module's $n"
        else
          fail "tailjoin-provisioner --check accepts the provisioner module's $n" "$out"
        fi
      done
      # What the module's assertions refuse, the provisioner refuses too (exit 2, naming the field).
      for c in "$work"/badprov-*.json; do
        n=$(basename "$c" .json)
        field=$(cat "${c%.json}.field")
        out=$("$TJP" --config "$c" --check 2>&1)
        rc=$?
        if [ $rc = 2 ] && grep -q "$field" <<<"$out"; then
          pass "tailjoin-provisioner --check rejects $n naming $field, exit 2"
        else
          fail "tailjoin-provisioner --check rejects $n naming $field, exit 2 (got $rc)" "$out"
        fi
      done
    fi

    # The `nix run .#vm` script, run against a fake VM runner (tests/nix/try-vm-app-check.sh).
    # shellcheck source=try-vm-app-check.sh
    . tests/nix/try-vm-app-check.sh
    # Its own directory, traversable by others: the unreadable-key case runs as nobody.
    tryvm=$(mktemp -d)
    chmod 755 "$tryvm"
    try_vm_app_check "$work/eval.json" "$tryvm"
    rm -rf "$tryvm"

    mapfile -t sets <"$work/sets"
    args=()
    for s in "${sets[@]}"; do args+=(--set "$s"); done
    if python3 tests/lib/render-unit.py modules/tailjoin-unit.json "${args[@]}" -o "$work/json.service" \
      && out=$(diff -u "$work/json.service" "$work/module.service"); then
      pass "module's unit equals render-unit.py's rendering of tailjoin-unit.json (+ ${#sets[@]} instance keys)"
    else
      fail "module's unit equals render-unit.py's rendering of tailjoin-unit.json" "${out:-render-unit.py failed}"
    fi
  fi
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
