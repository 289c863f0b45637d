"""A small counting TCP proxy for headscale, run as its own process by the fleet benchmark.

    python3 countproxy.py LISTEN_PORT BACKEND_PORT EVENT_LOG

headscale's server_url points at this proxy, so every connection a node makes to the control
server (the `GET /key` control-key fetch, the `POST /ts2021` Noise upgrade that carries
registration and the map long-poll, and the embedded DERP's `GET /derp` upgrade) passes through
it. For each connection it reads the client's first request line, then connects to headscale:

- headscale up:   the bytes are relayed both ways until either side closes;
- headscale down: the connection to headscale is refused, and the client's connection is closed
                  at once, as a TCP load balancer in front of a stopped server would.

Every connection is one line in EVENT_LOG: `<CLOCK_MONOTONIC seconds> ok|refused <request line>`.
The benchmark counts the `refused` lines inside the outage: each one is one attempt of some node
to reach the control server (or its DERP) while headscale was away.
"""

from __future__ import annotations

import asyncio
import sys
import time


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


def main() -> int:
    listen_port, backend_port, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    log = open(log_path, "a", buffering=1)

    async def handle(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter):
        t = time.monotonic()
        try:
            first = await asyncio.wait_for(creader.readuntil(b"\n"), timeout=10)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            first = b""
        text = first.decode("latin-1").strip()
        line = text[:120] if text.isprintable() and text else f"<binary {first[:3].hex()}…>"
        try:
            breader, bwriter = await asyncio.open_connection("127.0.0.1", backend_port)
        except OSError:
            log.write(f"{t:.6f} refused {line}\n")
            cwriter.close()
            return
        log.write(f"{t:.6f} ok {line}\n")
        bwriter.write(first)
        await asyncio.gather(pipe(creader, bwriter), pipe(breader, cwriter))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
