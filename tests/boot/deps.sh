# Sourced by the boot-test scripts: makes sure the host tools are here, installing missing
# ones with apt-get, and fails with the reason otherwise.
#   tj_boot_need COMMAND:DEBIAN_PACKAGE ...
tj_boot_need() {
  local want missing="" pkgs="" cmd pkg sudo=""
  for want in "$@"; do
    cmd=${want%%:*} pkg=${want#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/sbin/$cmd" ]; then
      missing="$missing $cmd" pkgs="$pkgs $pkg"
    fi
  done
  [ -z "$missing" ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "boot test: missing$missing and there is no apt-get; install the packages$pkgs by hand" >&2
    return 1
  fi
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "boot test: installing$pkgs (missing:$missing)" >&2
  $sudo apt-get update -qq >&2 || { echo "boot test: apt-get update failed; cannot install$pkgs" >&2; return 1; }
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $pkgs >&2 \
    || { echo "boot test: apt-get install$pkgs failed" >&2; return 1; }
}
export PATH=$PATH:/usr/sbin:/sbin
