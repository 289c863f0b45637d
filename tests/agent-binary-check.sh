#!/usr/bin/env bash
# The netbooted machines' binary carries no provisioner code and no database driver: checks the
# agent crate's dependency tree and the built binaries. A control makes sure the check can fail:
# the same marks must be found in tailjoin-provisioner.
#
#   tests/agent-binary-check.sh AGENT_BIN PROVISIONER_BIN
#
# Last line: `N passed, M failed`; exit 1 on any failure.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
agent=${1:?usage: tests/agent-binary-check.sh AGENT_BIN PROVISIONER_BIN}
prov=${2:?usage: tests/agent-binary-check.sh AGENT_BIN PROVISIONER_BIN}
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok    $1"; }
bad() { failed=$((failed + 1)); echo "FAIL  $1"; [ -n "${2:-}" ] && sed 's/^/      /' <<<"$2"; }

# Crates only the provisioner may pull in (a database driver would be one of them).
forbidden='^(tailjoin-provisioner|rusqlite|libsqlite3-sys|postgres|tokio-postgres|sqlx|diesel) '
tree=$(cd "$root/agent" && cargo tree --locked -p tailjoin -e normal,build --prefix none 2>&1) \
  || { bad "cargo tree -p tailjoin" "$tree"; echo "$passed passed, $failed failed"; exit 1; }
hits=$(grep -E "$forbidden" <<<"$tree" | sort -u)
if [ -z "$hits" ]; then ok "the agent crate depends on no provisioner crate or database driver"
else bad "the agent crate depends on no provisioner crate or database driver" "$hits"; fi
ptree=$(cd "$root/agent" && cargo tree --locked -p tailjoin-provisioner -e normal --prefix none 2>&1)
if grep -qE '^tailjoin-common ' <<<"$ptree"; then ok "control: the provisioner's tree is read the same way (it shows tailjoin-common)"
else bad "control: the provisioner's tree is read the same way (it shows tailjoin-common)" "$ptree"; fi

# Texts only the provisioner's code holds: its netboot routes, its admission and store.
marks=("/v1/boot.ipxe" "mint_queue_secs" "netboot-tokens.json")
for m in "${marks[@]}"; do
  if grep -qaF -- "$m" "$prov"; then ok "control: tailjoin-provisioner contains \"$m\""
  else bad "control: tailjoin-provisioner contains \"$m\"" "the mark is stale: pick a text the provisioner's code still has"; fi
  if grep -qaF -- "$m" "$agent"; then bad "the agent binary does not contain \"$m\"" "$agent carries provisioner code"
  else ok "the agent binary does not contain \"$m\""; fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
