#!/usr/bin/env python3
"""Every command README.md gives is exercised, by this check or by a named test.

    python3 tests/docs/check_readme.py

The commands are the lines of the README's ```sh blocks and its inline code that starts with a
command and has arguments (or names a tests/ script). Each must match an entry of COVERAGE:
  run   this script runs it (the demo; `nix flake init -t` into a temporary directory, with no
        network; `tailjoin … --help` for the flags the README names; `tailjoin check-config` on
        every JSON example);
  test  a test that runs it, found by the strings that make the call in that file;
  ci    tests/run-all.sh (what .ci/run runs) calls it;
  manual  the README itself says it is not run in CI or here, next to the command.
A README command with no entry, or an entry no README command needs, fails the check. Besides:
the first screen gives exactly the two commands, every Nix example parses, every path the
README names exists, and no placeholder flake URL (github:OWNER/…) is left.

The agent is $TAILJOIN_BIN, else agent/target/release/tailjoin (cargo build --release in
agent/). The demo needs what tests/demo.sh builds (cached after the first run). `nix flake
init` needs nix-instantiate's Nix with flakes and `unshare -n` (root), so that it cannot reach
any network. Last line: `N passed, M failed`; exit 1 on any failure.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Where the README tells a user to clone tailjoin; this checkout stands in for it.
CLONE = "/srv/tailjoin"

# The first word (or script path) that makes inline code a command.
COMMAND = re.compile(
    r"^(tests/\S+\.sh\b|(tailjoin|tailjoin-provisioner|nix|nixos-rebuild|journalctl|headscale|tailscale"
    r"|systemd-analyze|systemd-creds|cargo|curl)\s+\S)"
)

# Inline code that looks like a command and is not one, with why.
NOT_COMMANDS = {
    "tailjoin 0.1.0 on <host>: starting": "a healthchecks ping body the README quotes",
}

# (README command pattern, kind, detail). For `test`: [(file, [strings all in that file])].
COVERAGE: list[tuple[str, str, object]] = [
    (r"^tests/demo\.sh$", "run", "demo"),
    (r"^nix flake init -t( git\+file:///srv/tailjoin)?$", "run", "flake_init"),
    (r"^tailjoin run --help$", "run", "run_help"),
    (r"^tailjoin check-config( FILE)?$", "run", "json_examples"),
    (r"^tests/run-all\.sh$", "test", [(".ci/run", ["exec tests/run-all.sh"])]),
    (r"^tests/agent-binary-check\.sh$", "test", [("tests/run-all.sh", ["tests/agent-binary-check.sh"])]),
    (r"^tests/(nix/check|boot/run|fuzz|peers/build)\.sh$", "ci", None),
    (r"^cargo (fmt --check|clippy -D warnings)$", "ci", None),
    (r"^tests/nix/gen-options\.sh$", "test", [("tests/nix/check.sh", ["tests/nix/gen-options.sh --check"])]),
    (r"^tests/bench/run\.sh$", "run", "bench_help"),
    (r"^tests/matrix\.sh$", "manual", "(not in CI)"),
    (r"^nix (build|flake check)$", "manual", "**Not run:**"),
    (
        r"^tailjoin run( --config /etc/tailjoin/config\.json)?$",
        "test",
        [
            ("tests/real_peers/agent.py", ['"run",']),
            ("tests/real_peers/test_health_push.py", ['args=[f"--config={config}"']),
            ("tests/boot/build-image.sh", ["tailjoin run --config /etc/tailjoin/config.json"]),
        ],
    ),
    (r"^tailjoin status( \[--json\])?$", "test", [("tests/real_peers/agent.py", ['"status"', '"--json"'])]),
    (
        r"^tailjoin-provisioner( --config FILE)?( \[?--check\]?)?$",
        "test",
        [("tests/nix/check.sh", ['--config "$c" --check']), ("tests/real_peers/provisioner.py", ["provisioner_bin()"])],
    ),
    (
        r"^tailjoin-provisioner --config FILE pending\|approve MAC\|revoke MAC$",
        "test",
        [("tests/real_peers/test_netboot_provisioner.py", ['"pending"', '"approve"', '"revoke"'])],
    ),
    (
        r"^tailjoin-provisioner (pending|approve 52:54:00:12:34:56)$",
        "test",
        [("tests/boot/test_netboot.py", ['"pending"', '"approve"']), ("tests/nix/eval-netboot.nix", ["tailjoin-provisioner"])],
    ),
    (r"^journalctl -u tailjoin( -o json)?$", "test", [("tests/boot/guest/image/usr/local/lib/tailjoin-test/collect", ["journalctl -b -u tailjoin.service -o json"])]),
    (r"^headscale nodes list$", "test", [("tests/real_peers/peers.py", ['"nodes", "list"'])]),
    (r"^tailscale set$", "test", [("tests/real_peers/test_prefs_rejoin.py", ['"set"'])]),
    # A unit test of the decision: no real-peer test runs `tailscale down`.
    (r"^tailscale down$", "test", [("agent/tailjoin/src/decide/tests.rs", ["OnStopped::Respect"])]),
    # tailscale's own tailscale-wait-online.service runs it in the boot test's image.
    (r"^tailscale wait$", "test", [("tests/boot/guest/image/usr/local/lib/tailjoin-test/collect", ["tailscale-wait-online.service"]),
                                  ("tests/boot/test_boot.py", ["tailscale-online.target"])]),
    (r"^tests/demo\.sh --vm$", "test", [("tests/boot/test_demo_vm.py", ['"--vm"'])]),
    (r"^tests/nix/try-vm-app-check\.sh$", "test", [("tests/nix/check.sh", [". tests/nix/try-vm-app-check.sh"])]),
    # No nixpkgs here: the VM is never built; the README says so next to the commands.
    (r"^nix run \.(#vm)?$", "manual", "Not run here"),
    (r"^nixos-rebuild build-vm --flake \.$", "manual", "Not run here"),
    (r"^\./result/bin/run-tailjoin-generic-vm -fw_cfg \S+$", "manual", "Not run here"),
    (r"^tailscale up --auth-key file:$", "test", [("tests/bench/baselines/classic-autoconnect.sh", ['--auth-key="file:'])]),
    (r"^systemd-analyze security$", "test", [("tests/boot/test_boot.py", ["systemd-analyze"])]),
    (r"^systemd-creds encrypt --with-key=host$", "test", [("tests/boot/encrypt-credential.sh", ["systemd-creds encrypt", "--with-key=host"])]),
    (r"^nixos-rebuild switch --flake \.#box$", "test", [("tests/nix/eval-template.nix", ['["box" "machine"]'])]),
]

passed = failed = 0


def ok(name: str) -> None:
    global passed
    passed += 1
    print(f"ok    {name}")


def fail(name: str, detail: str = "") -> None:
    global failed
    failed += 1
    print(f"FAIL  {name}")
    for line in detail.rstrip().splitlines():
        print(f"      {line}")


def check(name: str, cond: bool, detail: str = "") -> None:
    ok(name) if cond else fail(name, detail)


# ------------------------------------------------------------------ the README
def blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def commands(text: str) -> list[str]:
    found: list[str] = []
    for info, body in blocks(text):
        if info == "sh":
            for line in body.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    found.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if COMMAND.match(span) and span not in NOT_COMMANDS:
            found.append(span)
    return list(dict.fromkeys(found))


def agent() -> str | None:
    exe = os.environ.get("TAILJOIN_BIN") or str(ROOT / "agent/target/release/tailjoin")
    return exe if os.access(exe, os.X_OK) else None


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


# ------------------------------------------------------------------ what this script runs
def run_demo(text: str) -> None:
    name = "tests/demo.sh runs: a node joins, /healthz answers 200, the netboot machine joins, a replayed token is refused, the TPM machine joins and another TPM is refused"
    try:
        r = run(["bash", "tests/demo.sh"], cwd=ROOT, timeout=1800)
    except subprocess.TimeoutExpired:
        return fail(name, "tests/demo.sh did not end within 30 minutes")
    out = r.stdout + r.stderr
    want = ["Running as demo-node", "HTTP 200", "Running as demo-netboot", "replay token: HTTP 403",
            "Running as demo-tpm", "another TPM:  HTTP 403", "no TPM:       HTTP 403"]
    missing = [w for w in want if w not in out]
    check(name, r.returncode == 0 and not missing, f"exit {r.returncode}, missing {missing}\n{out[-3000:]}")


def run_flake_init(text: str) -> None:
    name = f"nix flake init -t git+file://{CLONE} (this checkout) writes templates/default, with no network"
    nix = shutil.which("nix")
    unshare = shutil.which("unshare")
    if not nix or not unshare:
        return fail(name, f"needs nix (apt: nix-bin) and unshare; found nix={nix} unshare={unshare}")
    store_before = set(os.listdir("/nix/store")) if os.path.isdir("/nix/store") else set()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [unshare, "-n", nix, "--extra-experimental-features", "nix-command flakes",
                "--option", "eval-cache", "false", "flake", "init", "-t", f"git+file://{ROOT}"]
        r = run(argv, cwd=tmp, timeout=600)
        tracked = run(["git", "ls-files", "templates/default"], cwd=ROOT).stdout.split()
        want = {Path(p).relative_to("templates/default").as_posix(): (ROOT / p).read_bytes() for p in tracked}
        got = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
        # Remove what the run copied into the store (this checkout's tracked files), nothing else.
        if os.path.isdir("/nix/store"):
            new = [f"/nix/store/{p}" for p in set(os.listdir("/nix/store")) - store_before if p.endswith("-source")]
            if new:
                run(["nix-store", "--delete", *new])
    check(name, r.returncode == 0 and want and got == want,
          f"exit {r.returncode}: {r.stderr[-2000:]}\nwrote {sorted(got)}, templates/default has {sorted(want)}")


def run_run_help(text: str) -> None:
    exe = agent()
    name = "tailjoin run --help: every setting has a flag and an env variable, e.g. --login-server/TAILJOIN_LOGIN_SERVER; no flag takes the key"
    if exe is None:
        return fail(name, "no agent: set TAILJOIN_BIN or cargo build --release in agent/")
    out = run([exe, "run", "--help"]).stdout
    flags = re.findall(r"^\s+(--[a-z0-9-]+)", out, re.M)
    key_flags = [f for f in flags if f in ("--auth-key", "--key", "--authkey")]
    check(name, "--login-server" in flags and "TAILJOIN_LOGIN_SERVER" in out and not key_flags,
          f"flags: {flags}")
    for sub, flag in [("status", "--json")]:
        h = run([exe, sub, "--help"]).stdout
        check(f"tailjoin {sub} --help has {flag}", re.search(rf"^\s+{flag}\b", h, re.M) is not None, h)
    prov = str(Path(exe).with_name("tailjoin-provisioner"))
    h = run([prov, "--help"]).stdout
    for flag in ("--check", "--config"):
        check(f"tailjoin-provisioner --help has {flag}", re.search(rf"^\s+{flag}\b", h, re.M) is not None, h)
    for sub in ("pending", "approve", "revoke"):
        check(f"tailjoin-provisioner --help lists {sub}", re.search(rf"^\s+{sub}\b", h, re.M) is not None, h)


def run_json_examples(text: str) -> None:
    """The full config example, and it with each fragment example laid over it, pass check-config."""
    exe = agent()
    if exe is None:
        return fail("README JSON examples pass tailjoin check-config", "no agent: set TAILJOIN_BIN or build agent/")
    docs = [b for info, b in blocks(text) if info == "json"]
    full = next((json.loads(b) for b in docs if b.lstrip().startswith("{") and "auth_key" in json.loads(b)), None)
    if full is None:
        return fail("README has a full JSON config example", "no ```json block with auth_key")
    variants = [("the full config example", full)]
    for b in docs:
        if b.lstrip().startswith("{"):
            continue
        for key, value in fragment_items(b):
            variants.append((f"the full config with the example's {key} ({short(value)})", {**full, key: value}))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (what, cfg) in enumerate(variants):
            path = Path(tmp) / f"config-{i}.json"
            path.write_text(json.dumps(cfg))
            r = run([exe, "check-config", str(path)])
            check(f"tailjoin check-config accepts {what}", r.returncode == 0, r.stdout + r.stderr)


def fragment_items(text: str) -> list[tuple[str, object]]:
    """A fragment example: `"key": value` items, comma-separated or one alternative per line."""
    dec, items, pos = json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            return items
        key, pos = dec.raw_decode(text, pos)
        pos = text.index(":", pos) + 1
        while text[pos] in " \t\r\n":
            pos += 1
        value, pos = dec.raw_decode(text, pos)
        items.append((key, value))


def short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def run_bench_help(text: str) -> None:
    r = run(["bash", "tests/bench/run.sh", "--help"], cwd=ROOT, timeout=120)
    named = ["--runs", "--quick", "--sections"]
    check("tests/bench/run.sh --help lists the options the README names (--runs, --quick, --sections)",
          r.returncode == 0 and all(n in r.stdout for n in named), r.stdout + r.stderr)


RUNS = {"demo": run_demo, "flake_init": run_flake_init, "run_help": run_run_help,
        "json_examples": run_json_examples, "bench_help": run_bench_help}


# ------------------------------------------------------------------ the rest
def main() -> int:
    text = README.read_text()
    cmds = commands(text)
    used_entries: set[int] = set()
    to_run: list[str] = []
    for cmd in cmds:
        hits = [i for i, (pat, _, _) in enumerate(COVERAGE) if re.match(pat, cmd)]
        if not hits:
            fail(f"README command `{cmd}` is exercised", "no COVERAGE entry in tests/docs/check_readme.py matches it: "
                 "add the test that runs it, or run it here")
            continue
        used_entries.update(hits)
        for i in hits:
            _, kind, detail = COVERAGE[i]
            if kind == "run":
                to_run.append(detail)
            elif kind == "ci":
                # A line of run-all.sh with the command's words in order (it may add flags).
                words = r"\b.*".join(re.escape(w) for w in cmd.split())
                script = (ROOT / "tests/run-all.sh").read_text()
                check(f"`{cmd}` is run by tests/run-all.sh", re.search(words, script) is not None)
            elif kind == "test":
                missing = [(f, s) for f, needles in detail for s in needles
                           if not (ROOT / f).is_file() or s not in (ROOT / f).read_text()]
                check(f"`{cmd}` is exercised by {', '.join(f for f, _ in detail)}", not missing, f"not found: {missing}")
            elif kind == "manual":
                line = next((l for l in text.splitlines() if f"`{cmd}`" in l or cmd in l), "")
                para = text[max(0, text.find(line) - 400): text.find(line) + 400] if line else ""
                check(f"`{cmd}` is stated as not run ({detail})", detail in para, para)
    for i, (pat, _, _) in enumerate(COVERAGE):
        check(f"COVERAGE entry {pat} is needed by a README command", i in used_entries)
    first_screen = text.split("\n---\n", 1)[0]
    first = [c for info, body in blocks(first_screen) if info == "sh" for c in commands(f"```sh\n{body}```\n")]
    check("the README's first screen (above the first ---) gives exactly two commands: tests/demo.sh, tests/run-all.sh",
          first == ["tests/demo.sh", "tests/run-all.sh"] and first_screen.count("```") == 2, f"{first}")
    check("no placeholder flake URL (github:OWNER/…) in the README", "OWNER" not in text,
          "\n".join(l for l in text.splitlines() if "OWNER" in l))

    # Every tests/ path the README names exists.
    paths = sorted({m for m in re.findall(r"`(tests/[^`\s]*)`", text)} | {m for m in re.findall(r"\]\(((?:tests|docs|secrets)/[^)#\s]*)", text)})
    # A pytest node id (`tests/x.py::test_y`) names the file before the `::`.
    missing = [p for p in paths if not glob.glob(str(ROOT / p.split("::", 1)[0]))]
    check(f"every path the README names exists ({len(paths)})", not missing, f"missing: {missing}")

    # Every Nix example parses: an expression, or the inside of an attribute set. Under `with`
    # the names an example takes from its surroundings (nixpkgs, inputs) are not unbound.
    for info, body in blocks(text):
        if info != "nix":
            continue
        first = body.strip().splitlines()[0]
        r = run(["nix-instantiate", "--parse", "-E", "with {}; " + body])
        if r.returncode != 0:
            r = run(["nix-instantiate", "--parse", "-E", "with {}; {\n" + body + "\n}"])
        check(f"the Nix example starting `{first}` parses", r.returncode == 0, r.stderr)

    for name in dict.fromkeys(to_run):
        RUNS[name](text)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
