"""headscale on the host's loopback as a qemu guest sees it (shared by the boot tests and
tests/demo.sh --vm).

qemu's user networking maps the guest's 10.0.2.2 to the host's 127.0.0.1, so headscale listens
on 127.0.0.1:PORT while its server_url (and with it the embedded DERP region it hands out) is
http://10.0.2.2:PORT.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "real_peers"))

import peers  # noqa: E402  (tests/real_peers/peers.py: the headscale harness)


class GuestHeadscale(peers.Headscale):
    """headscale on 127.0.0.1 that tells clients (and its DERP map) to use 10.0.2.2."""

    GUEST_HOST = "10.0.2.2"

    @property
    def guest_url(self) -> str:
        return f"http://{self.GUEST_HOST}:{self.port}"

    def config_text(self) -> str:
        text = super().config_text()
        # server_url is what clients dial, and the embedded DERP region takes its host name
        # and port from it; derp.server.ipv4 is the address clients use for that host.
        new = re.sub(r"(?m)^server_url: .*$", f"server_url: {self.guest_url}", text)
        new = re.sub(r"(?m)^(\s+ipv4:) 127\.0\.0\.1$", rf"\1 {self.GUEST_HOST}", new)
        if new.count(self.guest_url) != 1 or f"ipv4: {self.GUEST_HOST}" not in new:
            raise RuntimeError("tests/real_peers/peers.py changed its headscale config; update GuestHeadscale")
        return new
