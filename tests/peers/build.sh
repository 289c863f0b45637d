#!/usr/bin/env bash
# Builds the pinned tailscaled, tailscale and headscale from source with `go install`
# into a cache directory, once. A second run only checks the binaries and takes a second.
#
#   tests/peers/build.sh            # build (if needed) and print the bin directory
#   TAILJOIN_TAILSCALE_VERSION=v1.102.5 tests/peers/build.sh    # another release (the matrix)
#   TAILJOIN_HEADSCALE_VERSION=…        likewise for headscale
#
# Cache: $TAILJOIN_CACHE (default ~/.cache/tailjoin)/peers/<component>-<version>/bin
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
TAILSCALE_VERSION=${TAILJOIN_TAILSCALE_VERSION:-$TAILSCALE_VERSION}
HEADSCALE_VERSION=${TAILJOIN_HEADSCALE_VERSION:-$HEADSCALE_VERSION}

cache=${TAILJOIN_CACHE:-$HOME/.cache/tailjoin}
out=$cache/peers/bin-tailscale-$TAILSCALE_VERSION-headscale-$HEADSCALE_VERSION

die() { echo "tests/peers/build.sh: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed; install Go >= 1.26 (the pinned headscale needs it) or run .ci/run, which installs it"

build() { # build <dir> <module> <version> <package path inside the module>
  local dir=$1 mod=$2 ver=$3 pkg=$4 name src
  name=$(basename "$pkg")
  if [ -x "$dir/$name" ] && [ "$(cat "$dir/.$name.done" 2>/dev/null)" = "$mod/$pkg@$ver" ]; then return 0; fi
  mkdir -p "$dir"
  echo "building $mod/$pkg@$ver into $dir (first run only; takes minutes)" >&2
  # `go install pkg@version` would be the one-liner, but it asks the proxy for the module's
  # version list to check deprecations, and that listing is refused for some modules here.
  # Downloading the pinned module and building inside it is equivalent: the module's own
  # go.mod and go.sum decide every dependency.
  src=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] && [ -d "$src" ] || die "go mod download $mod@$ver failed (see above); is the Go module proxy reachable?"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-trimpath go build -o "$dir/$name" "./$pkg") \
    || die "building $mod/$pkg@$ver failed (see above)"
  echo "$mod/$pkg@$ver" >"$dir/.$name.done"
}

# tailscale's own systemd units for waiting on the tailnet (`tailscale wait`; v1.100.0 has them),
# copied beside the binaries for the boot image; nothing is copied when a release has none.
units() { # units <dir> <version>
  local dir=$1 ver=$2 src f
  [ "$(cat "$dir/.units.done" 2>/dev/null)" = "tailscale.com@$ver" ] && return 0
  src=$(go mod download -json "tailscale.com@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$src" ] && [ -d "$src" ] || die "go mod download tailscale.com@$ver failed (see above)"
  rm -rf "$dir/systemd"
  for f in tailscale-online.target tailscale-wait-online.service; do
    [ -f "$src/cmd/tailscaled/$f" ] || continue
    install -D -m 0644 "$src/cmd/tailscaled/$f" "$dir/systemd/$f"
  done
  echo "tailscale.com@$ver" >"$dir/.units.done"
}

build "$out" tailscale.com "$TAILSCALE_VERSION" cmd/tailscaled
build "$out" tailscale.com "$TAILSCALE_VERSION" cmd/tailscale
build "$out" github.com/juanfont/headscale "$HEADSCALE_VERSION" cmd/headscale
units "$out" "$TAILSCALE_VERSION"

echo "$out"
