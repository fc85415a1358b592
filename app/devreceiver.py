"""A webhook receiver for trying the portal offline (`./task dev` runs it on 127.0.0.1:8001).

Point a webhook at one of its paths to see deliveries succeed, fail and be retried:
`/ok` answers 200; `/status/<code>` answers that code (503 is retried, 400 dead-letters, 410 also
disables the webhook); `/flaky` alternates 503 and 200; `/slow/<seconds>` answers late (a timeout when
it is longer than the webhook's). Each request is printed with its event type and delivery id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys

_flaky = itertools.cycle((503, 200))


def _answer(path: str) -> tuple[int, float]:
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["status"] and len(parts) == 2 and parts[1].isdigit():
        return int(parts[1]), 0.0
    if parts[:1] == ["flaky"]:
        return next(_flaky), 0.0
    if parts[:1] == ["slow"] and len(parts) == 2 and parts[1].replace(".", "", 1).isdigit():
        return 200, float(parts[1])
    return (200, 0.0) if parts[:1] == ["ok"] or not parts else (404, 0.0)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while request_line := await reader.readline():
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", 0))
            await reader.readexactly(min(length, 10 * 1024 * 1024))
            status, delay = _answer(path)
            print(
                f"[receiver] {method} {path} -> {status}  {headers.get('x-intime-event', '-')} "
                f"delivery {headers.get('webhook-id', '-')}",
                file=sys.stderr,
                flush=True,
            )
            if delay:
                await asyncio.sleep(delay)
            body = b"ok" if status < 400 else b"failing on purpose"
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(os.environ.get("INTIME_DEV_RECEIVER_PORT", "8001"))))
