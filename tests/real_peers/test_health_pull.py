"""Pull-side health against real peers: the agent's optional listener answers /healthz (503 with
the reason until Running with an address, then 200) and /metrics, which the real Prometheus text
parser from prometheus_client accepts; the same metrics land in a node_exporter textfile."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from peers import free_port
from test_agent_scenarios import issue_key, key_file


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def wait_get(url: str, timeout: float = 10.0) -> tuple[int, str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_and_metrics_follow_the_join(headscale, tailscaled_factory, agent_factory, tmp_path):
    port = free_port()
    ts = tailscaled_factory("healthpull", start=False)
    key = issue_key(headscale)
    prom = tmp_path / "textfile" / "tailjoin.prom"
    prom.parent.mkdir()
    agent = agent_factory(tmp_path / "agent", ts, headscale.url, key_file=key_file(tmp_path, key),
                          args=[f"--health-listen=127.0.0.1:{port}", f"--health-textfile={prom}"])
    base = f"http://127.0.0.1:{port}"

    # tailscaled is not there yet: not healthy, and the reason says what the agent waits for.
    status, _, body = wait_get(f"{base}/healthz")
    assert status == 503 and "waiting-for-tailscaled" in body, body
    status, ctype, text = get(f"{base}/metrics")
    assert status == 200 and "version=0.0.4" in ctype
    m = samples(text)
    assert m[("tailjoin_state", (("state", "waiting-for-tailscaled"),))] == 1
    assert m[("tailjoin_joins_total", ())] == 0

    ts.start()
    report = agent.wait_state("running", timeout=60)
    status, _, body = get(f"{base}/healthz")
    assert status == 200 and report["node"]["tailscale_ips"][0] in body, body
    m = samples(get(f"{base}/metrics")[2])
    assert m[("tailjoin_state", (("state", "running"),))] == 1
    assert sum(v for (name, _), v in m.items() if name == "tailjoin_state") == 1, "one-hot"
    assert m[("tailjoin_joins_total", ())] == 1
    assert abs(m[("tailjoin_time_to_join_seconds", ())] - report["time_to_join_ms"] / 1000) < 0.002
    assert time.time() - m[("tailjoin_last_transition_timestamp_seconds", ())] < 120

    # The textfile collector sees the same document, written atomically next to nothing else.
    on_disk = samples(prom.read_text())
    assert on_disk[("tailjoin_state", (("state", "running"),))] == 1
    assert sorted(p.name for p in prom.parent.iterdir()) == ["tailjoin.prom"]
    assert get(f"{base}/nowhere")[0] == 404


def test_failures_are_counted_by_kind_and_a_busy_port_does_not_stop_joining(
        headscale, tailscaled_factory, agent_factory, tmp_path):
    import socket
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    ts = tailscaled_factory("healthbad")
    bogus = "hskey-auth-fakeFAKEfake-" + "0" * 40
    agent = agent_factory(tmp_path / "agent", ts, headscale.url, key_file=key_file(tmp_path, bogus),
                          args=[f"--health-listen=127.0.0.1:{busy}", f"--health-textfile={tmp_path / 'm.prom'}"])
    try:
        assert agent.wait_exit(timeout=60) == 3
        assert f"health listener on 127.0.0.1:{busy} cannot start" in agent.log()
        m = samples((tmp_path / "m.prom").read_text())
        assert m[("tailjoin_state", (("state", "failed"),))] == 1
        assert m[("tailjoin_failures_total", (("kind", "key-rejected"),))] >= 1
    finally:
        blocker.close()
