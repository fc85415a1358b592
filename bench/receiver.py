"""A fast webhook receiver for the benchmarks (one process, uvloop, a bare HTTP/1.1 protocol).

It answers 200 to every POST (or, for paths under /fail-first/, 503 to each delivery's first try; for
paths under /hang/<percent>/, that share of requests gets no answer at all: the connection stays open
until the sender gives up, as a receiver stuck on a lock does; such an arrival is kept with status 0),
counts the 2xx answers, and keeps (event id, webhook-id, arrival time, path, status) for every POST so
the bench can compute latency, lateness and, for the chaos run, what arrived where and how often.
GET /_stats returns the count; GET /_arrivals the records (none are kept with
BENCH_RECEIVER_ARRIVALS=0, for long runs that only count); POST /_reset clears them; POST
/_fail/<seconds> makes it answer 500 to everything for that long (an outage). An optional second
argument delays each answer by that many milliseconds, so that sends are in flight when a fault hits.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
    uvloop = None


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.arrivals: list[tuple[str, str, float]] = []
        self.failed_once: set[str] = set()
        self.failing_until = 0.0


DELAY = 0.0
KEEP_ARRIVALS = os.environ.get("BENCH_RECEIVER_ARRIVALS", "1") != "0"


STATE = State()
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"
DOWN = b"HTTP/1.1 500 Down\r\nContent-Length: 4\r\n\r\ndown"


class Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            delivery = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                lowered = name.lower()
                if lowered == "content-length":
                    length = int(value)
                elif lowered == "webhook-id":
                    delivery = value.strip()
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            self.respond(head.split(" ", 2), body, delivery)

    def respond(self, request_line: list[str], body: bytes, delivery: str) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1]
        if method == "GET" and path == "/_stats":
            payload = json.dumps({"count": STATE.count}).encode()
        elif method == "GET" and path == "/_arrivals":
            payload = json.dumps(STATE.arrivals).encode()
        elif method == "POST" and path == "/_reset":
            STATE.reset()
            payload = b"{}"
        elif method == "POST" and path.startswith("/_fail/"):
            STATE.failing_until = time.time() + float(path.removeprefix("/_fail/"))
            payload = b"{}"
        else:
            now = time.time()
            event = body[7:43].decode("latin-1")  # the body starts {"id": "<uuid>"
            if path.startswith("/hang/") and random.random() * 100 < float(path.split("/", 3)[2]):
                if KEEP_ARRIVALS:
                    STATE.arrivals.append((event, delivery, now, path, 0))
                return
            if now < STATE.failing_until:
                answer, status = DOWN, 500
            elif path.startswith("/fail-first/") and delivery not in STATE.failed_once:
                STATE.failed_once.add(delivery)
                answer, status = BUSY, 503
            else:
                STATE.count += 1
                answer, status = OK, 200
            if KEEP_ARRIVALS:
                STATE.arrivals.append((event, delivery, now, path, status))
            if DELAY:
                asyncio.get_running_loop().call_later(DELAY, self._write, answer)
            else:
                self.transport.write(answer)
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Protocol, "127.0.0.1", port, backlog=1024)
    print(f"receiver on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("PORT", "8765"))
    DELAY = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
    if uvloop is not None:
        uvloop.run(main(port))
    else:
        asyncio.run(main(port))
