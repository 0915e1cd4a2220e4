"""A loopback TCP proxy that adds a fixed delay to each direction (default 1 ms: a 2 ms round trip).

Latency, not bandwidth: bytes are forwarded as they arrive, each chunk released `delay` seconds after it was read,
in order (asyncio's call_at keeps FIFO order for equal deadlines). Loopback only. Built on asyncio Protocols and
timers (no task per chunk) so the proxy itself adds as little CPU as a Python proxy can.

    python bench/tcp_proxy.py --delay 0.001 --map 7001:127.0.0.1:6379 --map 7002:127.0.0.1:6380

prints "ready" once every listener is up; SIGTERM stops it. Used by bench/overview.py (a separate process, so the
proxy doesn't compete with the app for the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

LOOPBACK = "127.0.0.1"


class _Side(asyncio.Protocol):
    """One end of a proxied connection; forwards what it receives to its peer after `delay`."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # received before the peer connected
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.pending.append(data)
            return
        self.forward(data)

    def forward(self, data: bytes) -> None:
        """Release `data` to the peer after the delay (also how bytes held before the peer connected go out)."""
        self.loop.call_at(self.loop.time() + self.delay, self.peer.send, data)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.loop.call_at(self.loop.time() + self.delay, self._close_peer)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.loop.call_at(self.loop.time() + self.delay, self._close_peer)

    def _close_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve(listen_port: int, target_host: str, target_port: int, delay: float,
                client_class: type[_Side] = _Side, upstream_class: type[_Side] = _Side) -> asyncio.AbstractServer:
    """Listen on loopback and proxy each connection to the target; the side classes let a caller observe traffic."""
    loop = asyncio.get_running_loop()

    def client_side() -> _Side:
        client = client_class(delay)

        async def connect_upstream() -> None:
            try:
                _, upstream = await loop.create_connection(lambda: upstream_class(delay), target_host, target_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            client.peer, upstream.peer = upstream, client
            for data in client.pending:
                client.forward(data)
            client.pending.clear()

        loop.create_task(connect_upstream())
        return client

    return await loop.create_server(client_side, LOOPBACK, listen_port)


async def main(maps: list[tuple[int, str, int]], delay: float) -> None:
    servers = [await serve(port, host, target, delay) for port, host, target in maps]
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    os._exit(0)  # open connections are simply dropped


def parse_map(text: str) -> tuple[int, str, int]:
    listen, host, port = text.split(":")
    if host not in (LOOPBACK, "localhost"):
        raise argparse.ArgumentTypeError("loopback targets only")
    return int(listen), host, int(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.001, help="seconds added to each direction (default 0.001)")
    parser.add_argument("--map", action="append", type=parse_map, required=True, metavar="LISTEN:HOST:PORT")
    args = parser.parse_args()
    asyncio.run(main(args.map, args.delay))
