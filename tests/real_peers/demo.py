"""The demo behind tests/demo.sh: headscale + tailscaled + tailjoin on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from agent import Agent  # noqa: E402


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tailjoin-demo-") as tmp:
        work = Path(tmp)
        hs = peers.Headscale(work / "headscale")
        ts = peers.Tailscaled(work / "tailscaled", "demo-node")
        agent = None
        try:
            say(f"starting headscale {hs.url} (sqlite, embedded DERP, loopback only)")
            hs.start()
            user = hs.create_user("demo")
            key = hs.preauth_key(user)
            key_path = work / "authkey"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
            print(f"    created a single-use pre-auth key in {key_path} (mode 600; never printed)")

            say("starting tailscaled (userspace networking, its own socket and state dir)")
            ts.start()
            print(f"    backend state: {ts.state()}")

            say("starting tailjoin: it watches tailscaled's IPN bus and joins with the key")
            agent = Agent(work / "agent", ts, hs.url, key_file=key_path, log_level="info")
            print("    $ tailjoin " + " ".join(agent.argv[1:]))
            agent.start()
            report = agent.wait_state("running", timeout=60)
            print("\n    tailjoin's log:")
            for line in agent.log().splitlines():
                print("    | " + line)
            print(f"\n    joined in {report['time_to_join_ms'] / 1000:.1f}s")

            say("tailjoin status")
            out = subprocess.run(
                [agent.exe, "status", f"--state-dir={agent.state_dir}", f"--socket={ts.socket}"],
                capture_output=True, text=True,
            )
            print(out.stdout.rstrip())

            say("headscale nodes list (the control server's view)")
            for n in hs.nodes():
                state = "online" if n.get("online") else "offline"
                print(f"    node {n['id']}: {n['name']}  {' '.join(n['ip_addresses'])}  {state}  user {n['user']['name']}")
            return 0 if out.returncode == 0 else 1
        except Exception as e:  # noqa: BLE001 - the demo explains any failure and exits non-zero
            print(f"\ndemo failed: {e}", file=sys.stderr)
            return 1
        finally:
            if agent:
                agent.stop()
            ts.stop()
            hs.stop()
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
