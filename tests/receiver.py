"""A webhook receiver for tests (Svix's TestReceiver idea): a real HTTP server on 127.0.0.1 whose
answers the test scripts and whose log the test reads. Plain asyncio, HTTP/1.1 with keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (beyond a webhook's timeout: a timeout)
    close: bool = False  # drop the connection without answering


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self) -> None:
        self.log: list[Received] = []
        self.script: deque[Answer] = deque()
        self.default = Answer()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def then(self, *answers: Answer) -> Receiver:
        self.script.extend(answers)
        return self

    async def start(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until `count` requests have arrived (fails the test after `timeout` seconds)."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.log) >= count), timeout)
        return self.log

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                answer = self.script.popleft() if self.script else self.default
                async with self.arrived:
                    self.log.append(Received(method, path, headers, body, time.time()))
                    self.arrived.notify_all()
                if answer.close:
                    return
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                head = [f"HTTP/1.1 {answer.status} X", f"Content-Length: {len(answer.body)}"]
                head += [f"{k}: {v}" for k, v in answer.headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
