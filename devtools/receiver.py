"""A webhook receiver for trying the portal offline (`./task dev` runs it on 127.0.0.1:8001).

Point a webhook at one of its paths to see deliveries succeed, fail and be retried:
`/ok` answers 200; `/status/<code>` answers that code (503 is retried, 400 dead-letters, 410 also
disables the webhook); `/flaky` alternates 503 and 200; `/slow/<seconds>` answers late (a timeout when
it is longer than the webhook's). Each request is printed with its event type and delivery id.

It also plays simulated integration providers: `/providers/<name>/health` and any other path under
`/providers/<name>/` answer 200, or 503 while that provider is broken. Break and restore one with
`POST /providers/<name>/break` and `/restore`, or with the buttons on `GET /providers`, and watch the
demo integration fail over and back in the portal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys

_flaky = itertools.cycle((503, 200))
_broken: set[str] = set()
PROVIDERS = ("primary", "backup")


def _providers_page() -> bytes:
    rows = "".join(
        f"<tr><td>{name}</td><td>{'broken (503)' if name in _broken else 'working (200)'}</td><td>"
        f'<form method="post" action="/providers/{name}/{"restore" if name in _broken else "break"}">'
        f'<button data-testid="{"restore" if name in _broken else "break"}-{name}">'
        f"{'Restore' if name in _broken else 'Break'}</button></form></td></tr>"
        for name in PROVIDERS
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Simulated providers</title>"
        "<body style='font:16px system-ui;margin:2rem'><h1>Simulated providers</h1>"
        f"<table cellpadding=6>{rows}</table></body>"
    ).encode()


def _provider(method: str, parts: list[str]) -> tuple[int, bytes, dict[str, str]] | None:
    """The simulated providers' answers, or None when the path is not theirs."""
    if parts == ["providers"]:
        return 200, _providers_page(), {"Content-Type": "text/html; charset=utf-8"}
    if parts[:1] != ["providers"] or len(parts) < 3 or parts[1] not in PROVIDERS:
        return None
    name, action = parts[1], parts[2]
    if method == "POST" and action in ("break", "restore") and len(parts) == 3:
        (_broken.add if action == "break" else _broken.discard)(name)
        return 303, b"", {"Location": "/providers"}
    if name in _broken:
        return 503, b"broken on purpose", {}
    return 200, b'{"ok": true}', {"Content-Type": "application/json"}


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
            simulated = _provider(method, [p for p in path.split("?")[0].split("/") if p])
            if simulated is not None:
                status, content, extra = simulated
                head = [
                    f"HTTP/1.1 {status} X",
                    f"Content-Length: {len(content)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + content)
                await writer.drain()
                continue
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
