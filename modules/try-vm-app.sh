# The body of `nix run .#vm` (try-vm-app.nix sets `runner`, the VM's run script, `credential`,
# the name of the system credential the OS reads its key from, and `store`, the Nix store
# directory, above this).
#
#   tailjoin-vm KEYFILE [QEMU_OPTION...]
#   TAILJOIN_KEY_FILE=KEYFILE tailjoin-vm [QEMU_OPTION...]
usage() {
  cat <<USAGE
usage: tailjoin-vm KEYFILE [QEMU_OPTION...]
       TAILJOIN_KEY_FILE=KEYFILE tailjoin-vm [QEMU_OPTION...]

Boots the tailjoin generic OS in qemu. Its tailjoin joins the tailnet with the auth key in
KEYFILE, which qemu hands to the VM as the systemd credential '$credential' over fw_cfg
(qemu reads the file when it starts; the key is on no command line and never in the Nix store).
The VM's console is this terminal; quit with Ctrl-a x.
USAGE
}
die() {
  echo "tailjoin-vm: $*" >&2
  exit 2
}

case ${1:-} in
  -h | --help)
    usage
    exit 0
    ;;
esac
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  key_file=$1
  shift
elif [ -n "${TAILJOIN_KEY_FILE:-}" ]; then
  key_file=$TAILJOIN_KEY_FILE
else
  usage >&2
  die "no auth key file: give its path as the first argument or in TAILJOIN_KEY_FILE"
fi

# The file, not the key, is checked and named here: never print what is in it.
[ -e "$key_file" ] || die "auth key file $key_file does not exist; write the key into a file only you can read (umask 077) and name that file"
[ -f "$key_file" ] || die "auth key file $key_file is not a regular file"
[ -r "$key_file" ] || die "auth key file $key_file is not readable by $(id -un); make it readable by the user who runs the VM"
[ -s "$key_file" ] || die "auth key file $key_file is empty; put the auth key (Tailscale's tskey-auth-… or headscale's) into it"
[ -n "$(tr -d '[:space:]' <"$key_file" | head -c 1)" ] || die "auth key file $key_file holds only white space; put the auth key into it"
key_path=$(realpath -e -- "$key_file") || die "cannot resolve the path of $key_file"
case $key_path in
  "$store"/*) die "auth key file $key_file is in the Nix store, where every user can read it; keep the key outside the store" ;;
esac
mode=$(stat -L -c %a -- "$key_path")
if [ $((8#$mode & 8#077)) != 0 ]; then
  echo "tailjoin-vm: warning: $key_file is readable by others (mode $mode); chmod 600 it" >&2
fi

echo "tailjoin-vm: booting with the key from $key_path as the credential '$credential' (qemu fw_cfg); quit with Ctrl-a x" >&2
# qemu separates sub-options with commas; a comma in the path is written ",,".
exec "$runner" -fw_cfg "name=opt/io.systemd.credentials/$credential,file=${key_path//,/,,}" "$@"
