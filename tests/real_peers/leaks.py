"""What the leak tests search: every secret the tests hand out, and every place a secret must
never appear (argv of every process, sampled all session long; agent and provisioner logs,
status outputs, state directories, audit logs)."""

from __future__ import annotations

import os
import threading

# Every secret a test created: auth keys (pre-made and minted), API keys, OAuth client secrets,
# bearer and boot tokens.
SECRETS: list[str] = []


def remember(*values: str) -> None:
    SECRETS.extend(v for v in values if v and len(v) >= 12)


class ArgvWatcher:
    """Samples the command line of every process on the machine."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.seen: set[bytes] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        self.seen.add(f.read())
                except OSError:
                    continue
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
