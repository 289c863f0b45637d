#!/usr/bin/env bash
# Builds tailscale's containerboot from the same pinned tailscale module that
# tests/peers/build.sh builds tailscaled and tailscale from, once, into its own cache directory
# (tests/peers/build.sh's outputs and cache paths stay untouched). Prints the directory holding
# the binary on its last line. A second run only checks the binary.
#
#   tests/bench/build-containerboot.sh
#
# Cache: $TAILJOIN_CACHE (default ~/.cache/tailjoin)/peers/containerboot-tailscale-<version>/
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../peers/versions.env
. "$here/../peers/versions.env"

cache=${TAILJOIN_CACHE:-$HOME/.cache/tailjoin}
out=$cache/peers/containerboot-tailscale-$TAILSCALE_VERSION
want="tailscale.com/cmd/containerboot@$TAILSCALE_VERSION"

die() { echo "tests/bench/build-containerboot.sh: $*" >&2; exit 1; }

if [ -x "$out/containerboot" ] && [ "$(cat "$out/.containerboot.done" 2>/dev/null)" = "$want" ]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null 2>&1 || die "Go is not installed (tests/lib/ensure-deps.sh installs it)"
mkdir -p "$out"
echo "building $want into $out (first run only)" >&2
# The module download and the build inside the module's own directory, as tests/peers/build.sh
# does it: the module's go.mod and go.sum pick every dependency, so containerboot, tailscaled and
# tailscale come from one and the same source tree.
src=$(go mod download -json "tailscale.com@$TAILSCALE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] && [ -d "$src/cmd/containerboot" ] || die "go mod download tailscale.com@$TAILSCALE_VERSION failed"
(cd "$src" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -o "$out/containerboot" ./cmd/containerboot) \
  || die "building $want failed (see above)"
echo "$want" >"$out/.containerboot.done"
echo "$out"
