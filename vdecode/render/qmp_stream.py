"""QMP over a byte stream (stdin/stdout or a unix socket), as QEMU's monitor speaks it.

The greeting first; then each JSON value read from the stream (several per line or one over
several lines, as QEMU's ``json-streamer`` allows) is handed to the monitor and its reply written
with QEMU's bytes (``render/qmp_json.py``). A value that cannot be parsed gets QEMU's id-less
parse error, and the stream goes on.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, Protocol

from vdecode.render.qmp_json import encode_message


class Monitor(Protocol):
    def greeting(self) -> dict[str, Any]: ...
    def handle(self, request: Any) -> dict[str, Any]: ...


def split_values(chunks: Iterable[str], on_error: Callable[[str], None]) -> Iterable[Any]:
    """JSON values from a text stream; text that can never parse is reported and skipped."""
    decoder = json.JSONDecoder()
    buf = ""
    for chunk in chunks:
        buf += chunk
        while True:
            stripped = buf.lstrip()
            if not stripped:
                buf = ""
                break
            try:
                value, end = decoder.raw_decode(stripped)
            except json.JSONDecodeError as err:
                if err.pos >= len(stripped.rstrip()) or _unbalanced(stripped):
                    buf = stripped        # incomplete: wait for more input
                    break
                on_error(err.msg.lower())
                buf = stripped[stripped.find("\n") + 1:] if "\n" in stripped else ""
                continue
            yield value
            buf = stripped[end:]
    if buf.strip():
        on_error("expecting value")


def _unbalanced(text: str) -> bool:
    depth, in_str, esc = 0, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return depth > 0 or in_str


def serve_stream(monitor: Monitor, rfile: BinaryIO, wfile: BinaryIO,
                 parse_error: Callable[[str], dict[str, Any]],
                 after_reply: Callable[[], None] = lambda: None) -> None:
    """Speak QMP on one connection until its input ends."""
    wfile.write(encode_message(monitor.greeting()))
    wfile.flush()
    errors: list[str] = []

    def chunks() -> Iterable[str]:
        # Whatever has arrived, not whole lines: clients need not end a command with a newline
        # (qemu.qmp does not), and QEMU's json-streamer does not wait for one.
        while True:
            data = rfile.read1(65536)
            if not data:
                return
            yield data.decode("utf-8", errors="replace")

    for value in split_values(chunks(), errors.append):
        for msg in errors:
            wfile.write(encode_message(parse_error(msg)))
        errors.clear()
        wfile.write(encode_message(monitor.handle(value)))
        wfile.flush()
        after_reply()
    for msg in errors:
        wfile.write(encode_message(parse_error(msg)))
    wfile.flush()


def serve_unix_socket(path: str, new_monitor: Callable[[], Monitor],
                      parse_error: Callable[[str], dict[str, Any]],
                      after_reply: Callable[[], None] = lambda: None,
                      connections: int | None = None) -> None:
    """Accept connections on a unix socket, one at a time, each with a fresh negotiation."""
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    served = 0
    try:
        while connections is None or served < connections:
            conn, _ = srv.accept()
            with conn, conn.makefile("rb") as r, conn.makefile("wb") as w:
                try:
                    serve_stream(new_monitor(), r, w, parse_error, after_reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            served += 1
    finally:
        srv.close()
        os.unlink(path)
