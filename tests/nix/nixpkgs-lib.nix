# The real nixpkgs lib, from the checkout of github:nix-community/nixpkgs.lib that NIXPKGS_LIB
# names (the directory holding lib/, or lib/ itself). Used by tests/nix/options.nix.
let
  libPath = builtins.getEnv "NIXPKGS_LIB";
in
  if libPath == ""
  then
    throw ''
      NIXPKGS_LIB is not set.
      Point it at a checkout of github:nix-community/nixpkgs.lib (never commit it), e.g.
        git clone https://github.com/nix-community/nixpkgs.lib ~/.cache/tailjoin/nixpkgs-lib
        NIXPKGS_LIB=$HOME/.cache/tailjoin/nixpkgs-lib tests/nix/gen-options.sh
    ''
  else if builtins.pathExists (libPath + "/lib/default.nix")
  then import (libPath + "/lib")
  else if builtins.pathExists (libPath + "/default.nix")
  then import libPath
  else throw "NIXPKGS_LIB=${libPath} holds neither lib/default.nix nor default.nix"
