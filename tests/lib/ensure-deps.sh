#!/usr/bin/env bash
# Makes sure the tools the demo and the tests need are here, installing what is missing.
# Source it: it exports PATH changes. Fails with the reason when something cannot be had.
#
#   Go >= 1.26.4    to build the pinned tailscale and headscale (tests/peers/build.sh);
#                   fetched as a toolchain module from the Go module proxy when absent or old
#   cargo (Rust)    to build the agent; edition 2024 needs Rust >= 1.85
#   python3+pytest  the real-peer test runner (+ prometheus_client, a real metrics parser,
#                   + jsonschema, which validates the pushed webhook bodies)
#   openssl         makes the throwaway CA for the HTTPS key-source tests

tj_die() { echo "tests/lib/ensure-deps.sh: $*" >&2; exit 1; }
TJ_CACHE=${TAILJOIN_CACHE:-$HOME/.cache/tailjoin}
TJ_GO_VERSION=1.26.8

tj_version_ge() { # tj_version_ge HAVE WANT
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

tj_ensure_go() {
  local have=""
  if command -v go >/dev/null 2>&1; then
    have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  fi
  if [ -n "$have" ] && tj_version_ge "$have" 1.26.4; then return 0; fi
  local dir=$TJ_CACHE/go/go$TJ_GO_VERSION
  if [ ! -x "$dir/bin/go" ]; then
    echo "installing Go $TJ_GO_VERSION into $dir (found: ${have:-none})" >&2
    command -v curl >/dev/null 2>&1 || tj_apt curl
    command -v unzip >/dev/null 2>&1 || tj_apt unzip
    local arch
    case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) tj_die "no Go toolchain for $(uname -m)" ;; esac
    local tmp zip
    tmp=$(mktemp -d)
    zip=$tmp/go.zip
    # The Go toolchain is published as a module on the Go module proxy (what GOTOOLCHAIN uses).
    curl -fsSL -o "$zip" "${GOPROXY_URL:-https://proxy.golang.org}/golang.org/toolchain/@v/v0.0.1-go$TJ_GO_VERSION.linux-$arch.zip" \
      || tj_die "cannot download Go $TJ_GO_VERSION from the Go module proxy"
    unzip -q "$zip" -d "$tmp/x" || tj_die "cannot unpack the Go toolchain"
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir"
    mv "$tmp/x/golang.org/toolchain@v0.0.1-go$TJ_GO_VERSION.linux-$arch" "$dir"
    chmod -R u+w "$dir"
    chmod +x "$dir"/bin/* "$dir"/pkg/tool/*/* 2>/dev/null || true
    rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
  export GOTOOLCHAIN=local
}

tj_apt_updated=""
tj_apt() {
  command -v apt-get >/dev/null 2>&1 || tj_die "need $* but there is no apt-get; install it by hand"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  if [ -z "$tj_apt_updated" ]; then $sudo apt-get update -qq || tj_die "apt-get update failed"; tj_apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null || tj_die "apt-get install $* failed"
}

tj_ensure_rust() {
  for d in "$HOME/.cargo/bin"; do [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) export PATH="$d:$PATH" ;; esac; done
  command -v cargo >/dev/null 2>&1 \
    || tj_die "cargo is not installed; install Rust >= 1.85 with rustup (Debian's cargo is too old for edition 2024)"
  local have
  have=$(rustc --version | awk '{print $2}')
  tj_version_ge "$have" 1.85 || tj_die "rustc $have is too old; edition 2024 needs >= 1.85 (rustup update)"
  rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt >/dev/null 2>&1 || true
}

tj_ensure_python() {
  command -v python3 >/dev/null 2>&1 || tj_apt python3 python3-pip
  python3 -c 'import pytest' 2>/dev/null && return 0
  python3 -m pip install -q pytest 2>/dev/null || python3 -m pip install -q --break-system-packages pytest \
    || tj_apt python3-pytest
  python3 -c 'import pytest' 2>/dev/null || tj_die "cannot install pytest"
}

# prometheus_client's text-format parser checks /metrics in the real-peer suite.
tj_ensure_prometheus_parser() {
  python3 -c 'import prometheus_client.parser' 2>/dev/null && return 0
  python3 -m pip install -q prometheus_client 2>/dev/null \
    || python3 -m pip install -q --break-system-packages prometheus_client \
    || tj_apt python3-prometheus-client
  python3 -c 'import prometheus_client.parser' 2>/dev/null || tj_die "cannot install prometheus_client"
}

# jsonschema validates every pushed webhook body against docs/schema/report-v1.json (draft 2020-12,
# which needs jsonschema >= 4.0: Debian 12 ships 4.10).
tj_ensure_jsonschema() {
  python3 -c 'from jsonschema import Draft202012Validator' 2>/dev/null && return 0
  python3 -m pip install -q 'jsonschema>=4' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'jsonschema>=4' \
    || tj_apt python3-jsonschema
  python3 -c 'from jsonschema import Draft202012Validator' 2>/dev/null || tj_die "cannot install python3 jsonschema >= 4"
}

tj_ensure_go
tj_ensure_rust
tj_ensure_python
tj_ensure_prometheus_parser
tj_ensure_jsonschema
command -v openssl >/dev/null 2>&1 || tj_apt openssl
