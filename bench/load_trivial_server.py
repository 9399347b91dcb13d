"""A trivial HTTP/1.1 keep-alive server for bench/load_throughput.py: every request gets the same 200.

Run as a child (``python bench/load_trivial_server.py --port N``), pinned to its own core with ``taskset``. It
parses nothing but the end of each request head (``\\r\\n\\r\\n``; requests have no body), answers pipelined
requests in order, and prints ``ready <port>`` once listening on 127.0.0.1. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

BODY = b"ok\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
HEAD_END = b"\r\n\r\n"


class Constant200(asyncio.Protocol):
    """One connection: a buffer, and one constant response per complete request head."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        complete = buffer.count(HEAD_END)
        if complete:
            self.transport.write(RESPONSE * complete)
            buffer = buffer[buffer.rindex(HEAD_END) + 4 :]
        self.buffer = buffer


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Constant200, "127.0.0.1", port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
