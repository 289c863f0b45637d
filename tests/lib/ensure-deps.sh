#!/usr/bin/env bash
# Makes sure the tools the demo and the tests need are here, installing what is missing.
# Source it: it exports PATH changes. Fails with the reason when something cannot be had.
#
#   Go >= 1.26.4    to build the pinned tailscale and headscale (tests/peers/build.sh); when
#                   absent or old, Debian's Go (bookworm-backports) fetches it with GOTOOLCHAIN
#                   from the module proxy the machine's Go is configured for
#   cargo (Rust)    to build the agent; edition 2024 needs Rust >= 1.85
#   python3+pytest  the real-peer test runner (+ prometheus_client, a real metrics parser,
#                   + jsonschema, which validates the pushed webhook bodies)
#   openssl         makes the throwaway CA for the HTTPS key-source tests
#   swtpm, tpm2-tools  a real TPM 2.0 (software) and its tools: the provisioner's software
#                   MakeCredential is checked against TPM2_ActivateCredential in swtpm
#   libtss2-dev, pkg-config  tpm2-tss, which the agent links (tss-esapi) for its TPM-proven
#                   key requests; cargo finds it with pkg-config

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
  # A Go that knows GOTOOLCHAIN (>= 1.21) bootstraps the pinned one: Debian's own (Debian 12 has
  # it in bookworm-backports), or the one on PATH when it is new enough.
  local bootstrap="" v
  for v in 1.24 1.23 1.22 1.21; do
    if [ -x "/usr/lib/go-$v/bin/go" ]; then bootstrap=/usr/lib/go-$v/bin/go; break; fi
  done
  if [ -z "$bootstrap" ] && [ -n "$have" ] && tj_version_ge "$have" 1.21; then bootstrap=$(command -v go); fi
  if [ -z "$bootstrap" ]; then
    echo "installing Debian's Go from bookworm-backports to fetch Go $TJ_GO_VERSION (found: ${have:-none})" >&2
    tj_enable_backports
    tj_apt -t bookworm-backports golang-1.23-go
    bootstrap=/usr/lib/go-1.23/bin/go
    [ -x "$bootstrap" ] || tj_die "golang-1.23-go installed no $bootstrap"
  fi
  # Go's toolchain switch fetches the pinned release as a module from the proxy that this
  # machine's Go is configured for (go env GOPROXY), and runs it; its GOROOT is in the module cache.
  local goroot
  goroot=$(GOTOOLCHAIN=go$TJ_GO_VERSION "$bootstrap" env GOROOT) && [ -x "$goroot/bin/go" ] \
    || tj_die "cannot get Go $TJ_GO_VERSION through GOTOOLCHAIN from $("$bootstrap" env GOPROXY)"
  export PATH="$goroot/bin:$PATH"
  export GOTOOLCHAIN=local
}

# Debian 12's backports suite, from the same mirror the machine's apt already uses.
tj_enable_backports() {
  apt-cache policy 2>/dev/null | grep -q 'bookworm-backports' && return 0
  local uri=""
  [ -f /etc/apt/sources.list.d/debian.sources ] \
    && uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -z "$uri" ] && [ -f /etc/apt/sources.list ] \
    && uri=$(awk '$1 == "deb" && $3 ~ /^bookworm/ {print $2; exit}' /etc/apt/sources.list)
  [ -n "$uri" ] || tj_die "cannot find the Debian mirror apt uses, to add bookworm-backports for Go"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
    | $sudo tee /etc/apt/sources.list.d/tailjoin-backports.sources >/dev/null
  tj_apt_updated=""
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

# cryptography opens the AES-GCM-sealed keys in the real-peer TPM tests (tpm_machine.py).
tj_ensure_python_cryptography() {
  python3 -c 'from cryptography.hazmat.primitives.ciphers.aead import AESGCM' 2>/dev/null && return 0
  python3 -m pip install -q cryptography 2>/dev/null \
    || python3 -m pip install -q --break-system-packages cryptography \
    || tj_apt python3-cryptography
  python3 -c 'from cryptography.hazmat.primitives.ciphers.aead import AESGCM' 2>/dev/null \
    || tj_die "cannot install python3 cryptography"
}

# The nixpkgs lib the Nix checks evaluate the modules with (tests/nix/check.sh): no registry
# carries it, so it is a pinned commit of nix-community/nixpkgs.lib cloned into the cache. Where
# it cannot be had (no route to the git host), check.sh says so loudly, and fails under CI=true.
TJ_NIXPKGS_LIB_REPO=https://github.com/nix-community/nixpkgs.lib
TJ_NIXPKGS_LIB_COMMIT=de42d44212d207476489bce163375d8306a26d59
tj_ensure_nixpkgs_lib() {
  local dir=$TJ_CACHE/nixpkgs-lib
  [ -d "$dir/lib" ] && return 0
  [ -n "${NIXPKGS_LIB:-}" ] && return 0
  command -v git >/dev/null 2>&1 || tj_apt git
  echo "fetching nixpkgs.lib $TJ_NIXPKGS_LIB_COMMIT into $dir" >&2
  local tmp=$dir.partial
  rm -rf "$tmp"
  if timeout 300 git clone --quiet --filter=blob:none "$TJ_NIXPKGS_LIB_REPO" "$tmp" 2>/dev/null \
    && git -C "$tmp" checkout --quiet "$TJ_NIXPKGS_LIB_COMMIT" 2>/dev/null; then
    mv "$tmp" "$dir"
  else
    rm -rf "$tmp"
    echo "tests/lib/ensure-deps.sh: cannot clone $TJ_NIXPKGS_LIB_REPO at $TJ_NIXPKGS_LIB_COMMIT; the Nix module evaluation will say so" >&2
  fi
}

tj_ensure_go
tj_ensure_rust
tj_ensure_python
tj_ensure_prometheus_parser
tj_ensure_jsonschema
tj_ensure_python_cryptography
command -v openssl >/dev/null 2>&1 || tj_apt openssl
tj_ensure_nixpkgs_lib
command -v swtpm >/dev/null 2>&1 && command -v swtpm_setup >/dev/null 2>&1 || tj_apt swtpm swtpm-tools
command -v tpm2_activatecredential >/dev/null 2>&1 || tj_apt tpm2-tools
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists tss2-esys tss2-tctildr tss2-mu tss2-sys; } \
  || tj_apt libtss2-dev pkg-config
