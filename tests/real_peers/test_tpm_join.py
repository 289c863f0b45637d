"""The hardware-rooted join against real peers: the real provisioner minting from real headscale,
machines whose TPM is a real swtpm (driven by tpm2-tools through tpm_machine.py, a client of the
exchange written apart from the agent's), and the attacks a LAN neighbour would try. Each attack
is audited with its reason, and headscale gains no key and no node from it."""

from __future__ import annotations

import json
import os

import pytest
from cryptography.exceptions import InvalidTag

from test_minting import MINTED
from test_netboot_provisioner import (  # noqa: F401  (fixtures)
    GENEROUS, boot_files, cli, ipxe, issue, netboot_provisioner, post_key)
from tpm_machine import LocalCa, get_key, identity, open_sealed, proof, step1, step2

MAC = "52:54:00:7e:00:01"


def keys_minted(headscale) -> int:
    return len(headscale.preauth_keys())


def audit_reasons(prov) -> list[tuple[str, str | None]]:
    return [(a["event"], a.get("reason")) for a in prov.audit]


def joins(tailscaled_factory, headscale, key: str, name: str) -> None:
    """The key is a working tailnet key: a real tailscaled joins with it, tagged."""
    MINTED.append(key)
    ts = tailscaled_factory(name)
    ts.up(headscale.url, key, hostname=name)
    ts.wait_state("Running", timeout=60)
    node = headscale.wait_node_online(name, timeout=60)
    assert "tag:netboot" in json.dumps(node), node


def pending_entry(prov, mac: str) -> dict:
    r = cli(prov, "pending", "--json")
    assert r.returncode == 0, r.stderr
    found = [p for p in json.loads(r.stdout)["pending"] if p["mac"] == mac]
    assert len(found) == 1, r.stdout
    return found[0]


def test_required_an_unknown_machine_boots_shows_its_ek_and_joins_once_approve_binds_it(
        headscale, netboot_provisioner, swtpm_factory, tailscaled_factory):
    prov = netboot_provisioner(netboot={"tpm": "required"})
    tpm = swtpm_factory("machine")
    # An unknown MAC gets its boot: its TPM must prove it before any key.
    boot = issue(prov, MAC)
    status, plain = post_key(prov, boot["token"], [MAC])
    assert status == 403 and "TPM proof" in plain, (status, plain)

    before = keys_minted(headscale)
    status, headers, body = step1(prov, tpm, MAC)
    assert status == 503 and int(headers["retry-after"]) >= 1, (status, body)
    assert "waiting for approval" in body and tpm.ek_fingerprint in body, body
    entry = pending_entry(prov, MAC)
    assert entry["ek_fingerprint"] == tpm.ek_fingerprint, entry
    r = cli(prov, "pending")
    assert tpm.ek_fingerprint in r.stdout and "approve" in r.stdout, r.stdout

    r = cli(prov, "approve", MAC)
    assert r.returncode == 0 and f"bound to its TPM (EK {tpm.ek_fingerprint})" in r.stdout, r.stdout
    approved = json.loads((prov.state_dir / "netboot-approved.json").read_text())["macs"][MAC]
    assert approved["ek_fingerprint"] == tpm.ek_fingerprint, approved

    # No boot token needed: the TPM proves the machine.
    key = get_key(prov, tpm, MAC)
    assert keys_minted(headscale) == before + 1
    issued = [a for a in prov.audit if a["event"] == "issued"]
    assert len(issued) == 1 and issued[0]["ek_fingerprint"] == tpm.ek_fingerprint, issued
    assert "tpm_enrolled" in issued[0]["matched"] and "boot_token" not in issued[0], issued
    assert "netboot_token" not in issued[0]["matched"], issued
    assert ("pending", "tpm-pending-approval") in audit_reasons(prov)
    assert ("refused", "tpm-required") in audit_reasons(prov)
    joins(tailscaled_factory, headscale, key, "tpm-required-node")


def enrolled(prov, tpm) -> None:
    """when-enrolled: the MAC is approved, the machine boots with a token and shows its TPM
    (the key is sealed to it; the token decides), and `approve` then binds the EK it showed."""
    assert cli(prov, "approve", MAC).returncode == 0
    token = issue(prov, MAC)["token"]
    MINTED.append(get_key(prov, tpm, MAC, token=token))
    entry = pending_entry(prov, MAC)
    assert entry["ek_fingerprint"] == tpm.ek_fingerprint, entry
    r = cli(prov, "approve", MAC)
    assert r.returncode == 0 and f"bound to the TPM it showed (EK {tpm.ek_fingerprint})" in r.stdout, r.stdout


def test_attackers_with_a_token_a_claimed_mac_another_tpm_or_a_replayed_answer_get_no_key(
        headscale, netboot_provisioner, swtpm_factory):
    prov = netboot_provisioner(allow={"networks": ["127.0.0.0/8"]})  # tpm: when-enrolled (default)
    machine, thief = swtpm_factory("machine"), swtpm_factory("thief")
    enrolled(prov, machine)
    minted = keys_minted(headscale)
    nodes = len(headscale.nodes())

    # (a) The LAN neighbour fetches the MAC's boot script and presents its token with the MAC,
    # without a TPM: the enrolled MAC never again gets a key without proof (no downgrade).
    stolen = issue(prov, MAC)["token"]
    status, body = post_key(prov, stolen, [MAC])
    assert status == 403 and "enrolled with a TPM" in body, (status, body)

    # (b) The same with its own TPM: another EK claims the MAC.
    status, _, body = step1(prov, thief, MAC, token=stolen)
    assert status == 403 and "another TPM" in body and thief.ek_fingerprint in body, (status, body)
    # ... also without naming the MAC: the token's MAC is enrolled with another TPM.
    status, _, answer = step1(prov, thief, "52:54:00:7e:00:99", token=stolen)
    if status == 200:
        ch = answer["tpm_challenge"]
        credential = thief.activate(ch)
        assert credential is not None, "the thief's own TPM activates a challenge made for it"
        status, _, body = step2(prov, "52:54:00:7e:00:99", ch["id"], proof(credential, ch["id"]), token=stolen)
    assert status == 403, (status, body)

    # (c) The machine's own challenge, copied off the wire and fed to the thief's TPM: it does
    # not unwrap; a guessed proof fails activation and spends the challenge.
    status, _, answer = step1(prov, machine, MAC)
    assert status == 200, answer
    ch = answer["tpm_challenge"]
    assert thief.activate(ch) is None, "another TPM unwrapped a credential made for the machine's EK"
    status, _, body = step2(prov, MAC, ch["id"], proof(os.urandom(32), ch["id"]))
    assert status == 403 and "activation failed" in body, (status, body)
    real = machine.activate(ch)
    status, _, body = step2(prov, MAC, ch["id"], proof(real, ch["id"]))
    assert status == 409, (status, body)  # spent by the wrong answer: the machine starts over

    # A whole successful exchange, replayed: the proof is spent, the sealed key opens with no
    # other credential.
    status, _, answer = step1(prov, machine, MAC)
    ch = answer["tpm_challenge"]
    credential = machine.activate(ch)
    status, _, sealed = step2(prov, MAC, ch["id"], proof(credential, ch["id"]))
    assert status == 200 and "key" not in sealed, sealed
    MINTED.append(open_sealed(credential, ch["id"], sealed["sealed_key"]))
    status, _, body = step2(prov, MAC, ch["id"], proof(credential, ch["id"]))
    assert status == 409, (status, body)
    with pytest.raises(InvalidTag):
        open_sealed(os.urandom(32), ch["id"], sealed["sealed_key"])

    reasons = audit_reasons(prov)
    for want in ("tpm-required", "ek-mismatch", "activation-failed", "tpm-challenge-unknown"):
        assert ("refused", want) in reasons, (want, reasons)
    # Only the machine's own last exchange minted; no attacker got a key, none joined.
    assert keys_minted(headscale) == minted + 1
    assert len(headscale.nodes()) == nodes


def test_an_enrolled_tpm_needs_no_token_so_a_spent_or_expired_one_cannot_strand_it(
        headscale, netboot_provisioner, swtpm_factory, tailscaled_factory):
    prov = netboot_provisioner(allow={"networks": ["127.0.0.0/8"]})
    tpm = swtpm_factory("machine")
    enrolled(prov, tpm)
    spent = issue(prov, MAC)["token"]
    MINTED.append(get_key(prov, tpm, MAC, token=spent))
    # The token is spent now, and a replay of it without the TPM is refused...
    status, body = post_key(prov, spent, [MAC])
    assert status == 403, (status, body)
    # ...but the machine itself, with that spent token or with none, still gets its key.
    joins(tailscaled_factory, headscale, get_key(prov, tpm, MAC, token=spent), "tpm-spent-token")
    MINTED.append(get_key(prov, tpm, MAC))


def test_an_ek_certificate_from_the_fleet_ca_counts_as_approved_and_another_cas_does_not(
        headscale, netboot_provisioner, swtpm_factory, tailscaled_factory, tmp_path):
    fleet, other = LocalCa(tmp_path / "fleet-ca"), LocalCa(tmp_path / "other-ca")
    ours = swtpm_factory("ours", made_by=fleet)
    theirs = swtpm_factory("theirs", made_by=other)
    prov = netboot_provisioner(netboot={"tpm": "required",
                                        "tpm_ek_ca_files": [str(f) for f in fleet.files]})
    # A machine nobody approved, whose EK certificate chains to the fleet's CA: boot and key,
    # with no `approve` and no token.
    ipxe_script = issue(prov, MAC)
    assert ipxe_script["token"]
    key = get_key(prov, ours, MAC)
    issued = [a for a in prov.audit if a["event"] == "issued"]
    assert len(issued) == 1 and "tpm_ca" in issued[0]["matched"], issued
    assert issued[0]["ek_fingerprint"] == ours.ek_fingerprint
    joins(tailscaled_factory, headscale, key, "tpm-ca-node")

    # The same names from another CA (swtpm's local CAs all call themselves swtpm-localca): only
    # the signature tells them apart. It waits for approval, as an unknown TPM does.
    minted = keys_minted(headscale)
    status, _, body = step1(prov, theirs, "52:54:00:7e:00:02")
    assert status == 503 and "waiting for approval" in body, (status, body)
    assert "ek-cert-untrusted" in prov.log(), prov.log()[-2000:]
    entry = pending_entry(prov, "52:54:00:7e:00:02")
    assert entry["ek_fingerprint"] == theirs.ek_fingerprint and "swtpm-localca" in (entry["ek_issuer"] or ""), entry
    # A genuine fleet certificate (the other machine's, copied) shown with this TPM's own EK:
    # the certificate must certify the EK shown.
    forged = {**theirs.evidence(), "ek_certificate": ours.read("ek.der").hex()}
    status, _, body = prov.request("POST", body={**identity("52:54:00:7e:00:03"), "tpm": forged})
    assert status == 503 and "waiting for approval" in body, (status, body)
    assert "ek-cert-key-mismatch" in prov.log(), prov.log()[-2000:]
    assert keys_minted(headscale) == minted


def test_approve_with_an_ek_given_enrols_a_machine_before_its_first_boot(
        headscale, netboot_provisioner, swtpm_factory):
    prov = netboot_provisioner(netboot={"tpm": "required"})
    tpm = swtpm_factory("machine")
    bad = cli(prov, "approve", MAC, "--ek", "sha256:1234")
    assert bad.returncode == 2 and "64 hex digits" in bad.stderr, (bad.returncode, bad.stderr)
    r = cli(prov, "approve", MAC, "--ek", tpm.ek_fingerprint)
    assert r.returncode == 0 and f"bound to its TPM (EK {tpm.ek_fingerprint})" in r.stdout, r.stdout
    minted = keys_minted(headscale)
    MINTED.append(get_key(prov, tpm, MAC))
    assert keys_minted(headscale) == minted + 1
    assert not [a for a in prov.audit if a["event"] == "pending"], prov.audit
