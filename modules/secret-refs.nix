# Helpers the agent's and the provisioner's modules share for secrets named by a systemd
# credential or a file (never the secret itself): how such a reference is rendered into the JSON
# config, which of its two ways are set, and the unit's LoadCredential lines.
{lib}: rec {
  # A path given as a string so that it is never copied into the store; assertions check it.
  pathString = lib.types.either lib.types.str lib.types.path;

  isStorePath = p: builtins.isPath p || lib.hasPrefix "${builtins.storeDir}/" (toString p) || toString p == builtins.storeDir;

  # Which of credential and file a reference sets (exactly one is valid).
  refSourcesSet = ref:
    if ref == null
    then []
    else lib.filter (n: ref.${n} != null) ["credential" "file"];

  # The reference as the agent's JSON names it: {credential = NAME;} or {file = PATH;}.
  refJSON = ref:
    if ref == null
    then null
    else if ref.credential != null
    then {credential = ref.credential.name;}
    else if ref.file != null
    then {file = toString ref.file;}
    else null;

  credentialLine = c:
    if c.source == null
    then c.name
    else "${c.name}:${toString c.source}";

  # LoadCredential= / LoadCredentialEncrypted= for these credentials ({name, source, encrypted}).
  loadCredentials = credentials: let
    one = encrypted: let
      lines = map credentialLine (lib.filter (c: c.encrypted == encrypted) credentials);
    in
      if builtins.length lines == 1
      then builtins.head lines
      else lines;
  in
    lib.optionalAttrs (lib.any (c: !c.encrypted) credentials) {LoadCredential = one false;}
    // lib.optionalAttrs (lib.any (c: c.encrypted) credentials) {LoadCredentialEncrypted = one true;};
}
