"""The demo behind tests/demo.sh: headscale + tailscaled + tailjoin on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import json  # noqa: E402

import peers  # noqa: E402
from agent import Agent  # noqa: E402
from provisioner import Provisioner, credentials_dir, kernel_cmdline  # noqa: E402
from receiver import Receiver  # noqa: E402


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tailjoin-demo-") as tmp:
        work = Path(tmp)
        hs = peers.Headscale(work / "headscale")
        ts = peers.Tailscaled(work / "tailscaled", "demo-node")
        agent = None
        receiver = None
        fleet: list = []
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

            say("starting a webhook receiver: where the agent pushes its health reports")
            receiver = Receiver(work / "receiver").start()
            hook_path, _ = Receiver.secret_path("/hook", "demo-webhook")
            creds = credentials_dir(work / "credentials", tailjoin_webhook_url=receiver.url(hook_path))
            health_port = peers.free_port()
            cfg = work / "tailjoin.json"
            cfg.write_text(json.dumps({"health": {
                "listen": f"127.0.0.1:{health_port}",
                "heartbeat_secs": 60,
                "allow_plain_http": True,
                "webhook": {"url": {"credential": "tailjoin-webhook-url"}},
            }}, indent=1))
            print(f"    receiver on {receiver.base}; the webhook URL (it ends in a token) is the systemd-style")
            print("    credential tailjoin-webhook-url, never in the config; the config:")
            for line in cfg.read_text().splitlines():
                print("    | " + line)

            say("starting tailjoin: it watches tailscaled's IPN bus and joins with the key")
            agent = Agent(work / "agent", ts, hs.url, key_file=key_path, log_level="info",
                          args=[f"--config={cfg}"], env={"CREDENTIALS_DIRECTORY": str(creds)})
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
            if out.returncode != 0:
                return 1
            show_health(receiver, health_port)
            status = netboot_fleet(work, hs, fleet)
            return status or tpm_machine_joins(work, hs, fleet)
        except Exception as e:  # noqa: BLE001 - the demo explains any failure and exits non-zero
            print(f"\ndemo failed: {e}", file=sys.stderr)
            return 1
        finally:
            for thing in reversed(fleet):
                thing.stop()
            if agent:
                agent.stop()
            if receiver:
                receiver.stop()
            ts.stop()
            hs.stop()
            time.sleep(0.2)


def show_health(receiver: Receiver, health_port: int) -> None:
    """The reports that reached the webhook receiver, and the pull side with curl."""
    reqs = receiver.wait_for(
        lambda rs: any(json.loads(r.text).get("state") == "running" for r in rs),
        timeout=20, what="report of the node running",
    )
    say(f"the webhook receiver got {len(reqs)} reports (POST, JSON per docs/schema/report-v1.json)")
    for r in reqs:
        b = json.loads(r.text)
        print(f"    {b['timestamp']}  {b['event']:<10}  {b['previous_state'] or '-'} -> {b['state']}")
    running = [json.loads(r.text) for r in reqs if json.loads(r.text)["state"] == "running"][-1]
    print("    the last one:")
    for line in json.dumps(running, indent=2).splitlines():
        print("    | " + line)

    url = f"http://127.0.0.1:{health_port}"
    for path in ("/healthz", "/metrics"):
        say(f"curl {url}{path}")
        out = subprocess.run(["curl", "-sS", "-w", "\nHTTP %{http_code}\n", url + path],
                             capture_output=True, text=True, timeout=10)
        lines = out.stdout.splitlines()
        if path == "/metrics":
            lines = [x for x in lines if x.startswith(("tailjoin_state{state=\"running", "tailjoin_joins",
                                                     "tailjoin_time_to_join", "tailjoin_push", "HTTP"))]
        for line in lines:
            print("    " + line)
        if out.returncode != 0:
            raise RuntimeError(f"curl {path} failed: {out.stderr.strip()}")


def netboot_fleet(work: Path, hs: peers.Headscale, fleet: list) -> int:
    """Part two: a netbooted machine gets a freshly minted key from the provisioner."""
    say("a netboot fleet: `tailjoin-provisioner` holds headscale's API key and mints a key per machine")
    token = "fake-demo-boot-token-" + os.urandom(8).hex()
    creds = credentials_dir(work / "prov-creds", headscale_api_key=hs.api_key(),
                            boot_tokens=f"{token} demo-netboot\n")
    prov = Provisioner(work / "provisioner", {
        "mint": {"headscale": {"url": hs.url, "allow_plain_http": True,
                               "api_key": {"credential": "headscale-api-key"}}},
        "tags": ["tag:netboot"],
        "allow": {"networks": ["127.0.0.0/8"], "boot_tokens": {"credential": "boot-tokens"}},
    }, creds)
    fleet.append(prov)
    prov.start()
    print(f"    provisioner on {prov.url} (HTTPS, throwaway CA), 1 one-time boot token, audit log {prov.state_dir}/audit.jsonl")

    say("a machine boots with the provisioner's URL and its boot token on the kernel command line")
    ts = peers.Tailscaled(work / "tailscaled-netboot", "demo-netboot")
    fleet.append(ts)
    ts.start()
    cmdline = kernel_cmdline(work / "cmdline", key_url=prov.url, boot_token=token)
    print("    kernel command line: " + cmdline.read_text().strip().replace(token, "<one-time token>"))
    cfg = work / "netboot.json"
    cfg.write_text(json.dumps({"auth_key": {"kernel_cmdline": {"path": str(cmdline), "ca_file": str(prov.ca)}}}))
    agent = Agent(work / "agent-netboot", ts, hs.url, args=[f"--config={cfg}"], log_level="info")
    fleet.append(agent)
    agent.start()
    report = agent.wait_state("running", timeout=60)
    print(f"    {report['summary']}")
    issued = prov.audit[-1]
    print("    the provisioner's audit line (no key, no token):")
    print("    | " + json.dumps(issued))

    say("an unlisted machine (no boot token) and a replayed token are refused")
    status, _, body = prov.request("POST", body={"hostname": "intruder"})
    print(f"    no token:     HTTP {status} {body.strip()}")
    status, _, body = prov.request("POST", body={"hostname": "replay"}, token=token)
    print(f"    replay token: HTTP {status} {body.strip()}")

    say("headscale preauthkeys list: the key made by hand for part one, then the one the provisioner minted")
    for k in hs.preauth_keys():
        print(f"    key {k['id']}: reusable={k.get('reusable', False)} ephemeral={k.get('ephemeral', False)} "
              f"used={k.get('used', False)} tags={k.get('acl_tags', [])}")
    return 0


def tpm_machine_joins(work: Path, hs: peers.Headscale, fleet: list) -> int:
    """Part three: a machine with a TPM (swtpm on the host) gets a key only its TPM can read."""
    from tpm_machine import Swtpm, get_key, step1

    say("a machine with a TPM: netboot.tpm = \"required\", the key is sealed to its TPM (swtpm on the host)")
    mac, other_mac = "52:54:00:de:70:01", "52:54:00:de:70:02"
    boot = work / "boot"
    boot.mkdir()
    (boot / "bzImage").write_bytes(b"demo kernel\n")
    (boot / "initrd").write_bytes(b"demo initrd\n")
    creds = credentials_dir(work / "tpm-prov-creds", headscale_api_key=hs.api_key())
    prov = Provisioner(work / "tpm-provisioner", {
        "mint": {"headscale": {"url": hs.url, "allow_plain_http": True,
                               "api_key": {"credential": "headscale-api-key"}}},
        "tags": ["tag:netboot"],
        "allow": {"networks": ["127.0.0.0/8"]},
    }, creds)
    prov.config["netboot"] = {"listen": f"127.0.0.1:{peers.free_port()}", "key_url": prov.url,
                              "kernel": str(boot / "bzImage"), "initrds": [str(boot / "initrd")],
                              "tpm": "required"}
    prov.config_path.write_text(json.dumps(prov.config, indent=1))
    fleet.append(prov)
    prov.start()
    tpm, thief = Swtpm(work / "swtpm-machine"), Swtpm(work / "swtpm-thief")
    fleet.extend([tpm, thief])
    tpm.start()
    thief.start()
    print("    the machine's side is played by tpm2-tools on swtpm here (tailjoin itself reads /dev/tpmrm0;")
    print("    tests/boot/test_netboot_tpm.py shows it in a qemu guest with a virtual TPM)")
    status, _, body = step1(prov, tpm, mac)
    print(f"    first request, EK shown: HTTP {status} {body.strip()}")

    def admin(*args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAILJOIN_")}
        out = subprocess.run([os.environ["TAILJOIN_PROVISIONER_BIN"], f"--config={prov.config_path}", *args],
                             capture_output=True, text=True, timeout=30, env=env)
        print(f"    $ tailjoin-provisioner {' '.join(args)}")
        for line in (out.stdout + out.stderr).splitlines():
            print("    | " + line)

    admin("pending")
    admin("approve", mac)
    key = get_key(prov, tpm, mac, hostname="demo-tpm")
    issued = prov.audit[-1]
    print("    the answer held the key sealed to the TPM (AES-GCM under a credential only that TPM unwrapped);")
    print("    the provisioner's audit line:")
    print("    | " + json.dumps(issued))
    ts = peers.Tailscaled(work / "tailscaled-tpm", "demo-tpm")
    fleet.append(ts)
    ts.start()
    ts.up(hs.url, key, hostname="demo-tpm")
    ts.wait_state("Running", timeout=60)
    print(f"    tailscale up with that key: Running as demo-tpm, {' '.join(ts.ips())}")

    say("another TPM claiming the enrolled MAC, and a machine without TPM, are refused")
    status, _, body = step1(prov, thief, mac)
    print(f"    another TPM:  HTTP {status} {body.strip()}")
    status, _, body = prov.request("POST", body={"hostname": "no-tpm", "mac_addresses": [other_mac]})
    print(f"    no TPM:       HTTP {status} {body.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
