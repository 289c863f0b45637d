"""A machine's TPM for the real-peer tests: swtpm (Debian) driven by tpm2-tools, and a client of
the provisioner's TPM-proven `/v1/key` exchange written here, apart from the agent's, so the
provisioner is checked against a second implementation and the attacker tests can do what the
agent never would (replay, guess, swap TPMs).

The exchange: step 1 POSTs the identity with `tpm: {ek_public, ak_public}` (hex TPM2B_PUBLIC);
the answer is a credential wrapped to that EK and AK; the TPM unwraps it (ActivateCredential)
and step 2 POSTs `tpm_proof: {challenge_id, proof}` with proof = HMAC-SHA-256(credential,
"tailjoin/v1 tpm proof" NUL id); the key comes back sealed with AES-256-GCM under
HMAC-SHA-256(credential, "tailjoin/v1 tpm seal" NUL id), nonce first, id as associated data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import procs

TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_activatecredential", "tpm2_flushcontext")


def need_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not installed: the TPM tests need swtpm and tpm2-tools "
            "(apt-get install swtpm tpm2-tools; tests/lib/ensure-deps.sh does)")


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two free ports in a row on 127.0.0.1")


def derive(credential: bytes, label: bytes, challenge_id: str) -> bytes:
    return hmac.new(credential, label + b"\0" + challenge_id.encode(), hashlib.sha256).digest()


def proof(credential: bytes, challenge_id: str) -> str:
    return derive(credential, b"tailjoin/v1 tpm proof", challenge_id).hex()


def open_sealed(credential: bytes, challenge_id: str, sealed_hex: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    sealed = bytes.fromhex(sealed_hex)
    key = derive(credential, b"tailjoin/v1 tpm seal", challenge_id)
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], challenge_id.encode()).decode()


class LocalCa:
    """A TPM vendor's EK certificate authority: swtpm's own local CA (swtpm_localca, run by
    swtpm_setup --create-ek-cert), with its configuration and state in `workdir` (never /etc or
    /var/lib). Its root and the intermediate that signs EK certificates appear in `state/` once
    it has made its first TPM."""

    def __init__(self, workdir: Path):
        tool = shutil.which("swtpm_localca")
        if tool is None or shutil.which("swtpm_setup") is None:
            raise RuntimeError("swtpm_setup/swtpm_localca not installed: apt-get install swtpm-tools "
                               "(tests/lib/ensure-deps.sh does)")
        self.dir = Path(workdir)
        state = self.dir / "state"
        state.mkdir(parents=True, exist_ok=True)
        (self.dir / "swtpm-localca.conf").write_text(
            f"statedir = {state}\nsigningkey = {state}/signkey.pem\nissuercert = {state}/issuercert.pem\n"
            f"certserial = {state}/certserial\n")
        (self.dir / "swtpm-localca.options").write_text(
            "--platform-manufacturer tailjoin-test\n--platform-version 2.1\n--platform-model swtpm\n")
        (self.dir / "swtpm_setup.conf").write_text(
            f"create_certs_tool = {tool}\ncreate_certs_tool_config = {self.dir / 'swtpm-localca.conf'}\n"
            f"create_certs_tool_options = {self.dir / 'swtpm-localca.options'}\nactive_pcr_banks = sha256\n")

    def manufacture(self, tpm_state: Path) -> None:
        """A new TPM state with an EK and its certificate (NV 0x01c00002) signed by this CA."""
        r = subprocess.run(["swtpm_setup", "--tpm2", "--create-ek-cert", "--tpmstate", str(tpm_state),
                            "--config", str(self.dir / "swtpm_setup.conf"),
                            "--logfile", str(self.dir / "swtpm_setup.log")],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            log = (self.dir / "swtpm_setup.log")
            raise RuntimeError(f"swtpm_setup failed: {r.stdout}{r.stderr}\n"
                               f"{log.read_text() if log.exists() else ''}")

    @property
    def files(self) -> list[Path]:
        return [self.dir / "state/swtpm-localca-rootca-cert.pem", self.dir / "state/issuercert.pem"]


class Swtpm:
    """One software TPM on loopback, with an EK and an AK made by tpm2-tools (and, when made by
    a LocalCa, an EK certificate). Started through procs.spawn, so the suite's leak check sees
    it; stop() (or the fixture) ends it."""

    def __init__(self, workdir: Path | None = None, made_by: LocalCa | None = None):
        need_tools()
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tj-swtpm-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(exist_ok=True)
        self.made_by = made_by
        if made_by is not None:
            made_by.manufacture(self.dir / "state")
        self.port = _free_port_pair()
        self.tcti = f"swtpm:host=127.0.0.1,port={self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Swtpm":
        self.proc = procs.spawn(
            ["swtpm", "socket", "--tpm2", "--flags", "not-need-init,startup-clear",
             "--tpmstate", f"dir={self.dir / 'state'}",
             "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"swtpm exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"swtpm did not listen on {self.port} within {timeout}s")
                time.sleep(0.05)
        self.tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        self.tool("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256",
                  "-s", "rsassa", "-u", "ak.pub", "-n", "ak.name", "-r", "ak.priv")
        if self.made_by is not None:
            self.tool("tpm2_nvread", "0x01c00002", "-C", "o", "-o", "ek.der")
        return self

    def stop(self) -> None:
        procs.stop(self.proc)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "TPM2TOOLS_TCTI": self.tcti}
        r = subprocess.run(list(argv), cwd=self.dir, env=env, capture_output=True, timeout=120)
        # No resource manager: flush transient objects and sessions after every command.
        for kind in ("-t", "-s"):
            subprocess.run(["tpm2_flushcontext", kind], env=env, capture_output=True, timeout=60)
        return r

    def tool(self, *argv: str) -> None:
        r = self.run(*argv)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.decode(errors='replace')}")

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    @property
    def ek_fingerprint(self) -> str:
        """sha256 of the EK's TPMT_PUBLIC (its Name without the algorithm), as the provisioner
        shows it."""
        tpm2b = self.read("ek.pub")
        return "sha256:" + hashlib.sha256(tpm2b[2:]).hexdigest()

    def evidence(self) -> dict:
        doc = {"ek_public": self.read("ek.pub").hex(), "ak_public": self.read("ak.pub").hex()}
        if (self.dir / "ek.der").exists():
            doc["ek_certificate"] = self.read("ek.der").hex()
        return doc

    def activate(self, challenge: dict) -> bytes | None:
        """TPM2_ActivateCredential of a challenge; None when this TPM cannot (not its EK/AK)."""
        blob = (struct.pack(">II", 0xBADCC0DE, 1) + bytes.fromhex(challenge["id_object"])
                + bytes.fromhex(challenge["encrypted_secret"]))
        (self.dir / "blob").write_bytes(blob)
        (self.dir / "out").unlink(missing_ok=True)
        r = self.run("sh", "-c", "set -e; tpm2_startauthsession --policy-session -S s.ctx; "
                     "tpm2_policysecret -S s.ctx -c e >/dev/null; "
                     "tpm2_activatecredential -c ak.ctx -C ek.ctx -i blob -o out -P session:s.ctx >/dev/null; "
                     "tpm2_flushcontext s.ctx")
        return self.read("out") if r.returncode == 0 else None


def identity(mac: str, hostname: str = "tpm-node") -> dict:
    return {"hostname": hostname, "machine_id": "0" * 32, "boot_id": "b", "mac_addresses": [mac]}


def step1(prov, tpm: Swtpm, mac: str, token: str | None = None, hostname: str = "tpm-node"):
    """(status, headers, parsed JSON or text) of step 1."""
    status, headers, body = prov.request("POST", body={**identity(mac, hostname), "tpm": tpm.evidence()},
                                         token=token)
    return status, headers, (json.loads(body) if status == 200 else body)


def step2(prov, mac: str, challenge_id: str, proof_hex: str, token: str | None = None,
          hostname: str = "tpm-node"):
    body = {**identity(mac, hostname), "tpm_proof": {"challenge_id": challenge_id, "proof": proof_hex}}
    status, headers, text = prov.request("POST", body=body, token=token)
    return status, headers, (json.loads(text) if status == 200 else text)


def get_key(prov, tpm: Swtpm, mac: str, token: str | None = None, hostname: str = "tpm-node") -> str:
    """The whole exchange as the machine does it; the key, or an AssertionError saying where
    it stopped."""
    status, _, answer = step1(prov, tpm, mac, token, hostname)
    assert status == 200 and "tpm_challenge" in answer, (status, answer)
    ch = answer["tpm_challenge"]
    credential = tpm.activate(ch)
    assert credential is not None and len(credential) == 32, "the TPM did not activate its own challenge"
    status, _, sealed = step2(prov, mac, ch["id"], proof(credential, ch["id"]), token, hostname)
    assert status == 200 and "sealed_key" in sealed and "key" not in sealed, (status, sealed)
    return open_sealed(credential, ch["id"], sealed["sealed_key"])
