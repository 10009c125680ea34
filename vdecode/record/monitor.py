"""The live QMP monitor the recorder talks to.

Two ways in, one interface (:class:`Monitor`): a QMP socket (``-qmp unix:PATH,server=on,wait=off``
or ``-qmp tcp:HOST:PORT,...``; QEMU serves one client per monitor, hence a second ``-qmp`` for the
recorder) and, for a libvirt domain, ``virsh qemu-monitor-command`` run once a question (libvirt
owns the socket and has done the greeting; events do not come this way).

Every message is returned with the time it was sent or read (Unix seconds), as the transcript
records it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from typing import Any

from vdecode.errors import SetupError

Message = dict[str, Any]
#: ``(t, direction, message)`` as the transcript writes it: ``"->"`` to QEMU, ``"<-"`` from it
Record = tuple[float, str, Message]


class QemuGone(Exception):
    """QEMU closed the monitor (it exited or was killed): the recording ends, not an error."""


class Monitor:
    """What the recorder needs of a monitor."""

    #: the QMP greeting as QEMU sent it, with its time (``None`` through virsh)
    greeting: Record | None = None
    #: how the monitor was reached, for messages
    where: str = ""

    def execute(self, msg: Message) -> list[Record]:
        """Send one command; the records of the exchange: the command, events read meanwhile,
        the reply (last). :raises QemuGone: the monitor closed."""
        raise NotImplementedError

    def events(self, timeout: float) -> list[Record]:
        """Events QEMU sends within ``timeout`` seconds (returns at the first batch)."""
        time.sleep(max(0.0, timeout))
        return []

    def close(self) -> None:
        pass


class SocketMonitor(Monitor):
    """A QMP socket: ``PATH`` (unix) or ``HOST:PORT`` (TCP).

    :param timeout: seconds to wait for the greeting and for each reply.
    :raises SetupError: nothing listens there, or no greeting comes (another client holds the
        monitor: QEMU serves one at a time).
    """

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.where, self.timeout = address, timeout
        self._buf = b""
        try:
            family, target = _address(address)
            if family == socket.AF_UNIX:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(target)
            else:
                self.sock = socket.create_connection(target, timeout)
        except (OSError, ValueError) as err:
            raise SetupError(address, f"cannot connect to the QMP monitor: "
                                      f"{getattr(err, 'strerror', None) or err}") from None
        self.sock.setblocking(True)
        first = self._read(timeout, what="the QMP greeting")
        if "QMP" not in first[2]:
            raise SetupError(address, "not a QMP monitor: its first message is not a greeting")
        self.greeting = first
        records = self.execute({"execute": "qmp_capabilities", "id": 0})
        if "return" not in records[-1][2]:
            raise SetupError(address, f"qmp_capabilities refused: "
                                      f"{_error_text(records[-1][2])}")
        self.handshake = records

    def _read(self, timeout: float, *, what: str) -> Record:
        """The next message; :raises SetupError: none within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise SetupError(self.where, f"no reply from QEMU in {timeout:g} s (waiting for "
                                             f"{what}); another client may hold this monitor: "
                                             f"give QEMU a second -qmp for the recorder")
            try:
                chunk = self.sock.recv(65536)
            except ConnectionError:
                chunk = b""
            if not chunk:
                raise QemuGone(self.where)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return time.time(), "<-", json.loads(line)
        except ValueError:
            raise SetupError(self.where, f"not QMP: {line[:60]!r}") from None

    def execute(self, msg: Message) -> list[Record]:
        out: list[Record] = [(time.time(), "->", msg)]
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        except OSError:
            raise QemuGone(self.where) from None
        while True:
            rec = self._read(self.timeout, what=f"the reply to {msg['execute']}")
            out.append(rec)
            if "event" not in rec[2] and rec[2].get("id") == msg.get("id"):
                return out

    def events(self, timeout: float) -> list[Record]:
        out: list[Record] = []
        if b"\n" not in self._buf and not select.select([self.sock], [], [], max(0.0, timeout))[0]:
            return out
        out.append(self._read(self.timeout, what="an event"))
        while b"\n" in self._buf:
            out.append(self._read(self.timeout, what="an event"))
        return out

    def close(self) -> None:
        self.sock.close()


class VirshMonitor(Monitor):
    """``virsh [-c URI] qemu-monitor-command DOMAIN JSON``, once a question.

    libvirt puts its own ``id`` on the command (``libvirt-42``); the reply is recorded with the
    recorder's id, so the transcript pairs it with the command it wrote.
    """

    def __init__(self, domain: str, timeout: float = 10.0, virsh: str = "virsh",
                 uri: str | None = None) -> None:
        self.domain, self.timeout = domain, timeout
        self.argv = [virsh, *(["-c", uri] if uri else []), "qemu-monitor-command", domain]
        self.where = f"virsh domain {domain}"
        self.handshake = []

    def execute(self, msg: Message) -> list[Record]:
        sent = time.time()
        plain = {k: v for k, v in msg.items() if k != "id"}
        try:
            run = subprocess.run([*self.argv, json.dumps(plain)], capture_output=True,
                                 text=True, timeout=self.timeout)
        except FileNotFoundError:
            raise SetupError(self.argv[0], "virsh is not installed (or not on PATH)") from None
        except subprocess.TimeoutExpired:
            raise SetupError(self.where, f"virsh gave no reply in {self.timeout:g} s") from None
        if run.returncode != 0:
            said = (run.stderr.strip() or run.stdout.strip()).splitlines()
            text = said[0] if said else f"exit status {run.returncode}"
            if _domain_gone(text):
                raise QemuGone(self.where)
            raise SetupError(self.where, f"virsh failed: {text}")
        try:
            reply = json.loads(run.stdout)
        except ValueError:
            raise SetupError(self.where, f"virsh printed no QMP reply: "
                                         f"{run.stdout.strip()[:60]!r}") from None
        if "id" in msg:
            reply["id"] = msg["id"]
        return [(sent, "->", msg), (time.time(), "<-", reply)]


def _address(address: str) -> tuple[int, object]:
    """``(family, target)`` of ``PATH``, ``HOST:PORT``, or QEMU's ``unix:PATH``, ``tcp:HOST:PORT``.
    A name with a ``/``, or that exists, is a unix socket; else ``HOST:PORT`` is TCP."""
    kind, _, rest = address.partition(":")
    if kind == "unix" and rest:
        return socket.AF_UNIX, rest
    if kind == "tcp" and rest:
        address = rest
    elif os.path.exists(address) or "/" in address or ":" not in address:
        return socket.AF_UNIX, address
    host, _, port = address.rpartition(":")
    return socket.AF_INET, (host.strip("[]") or "localhost", int(port))


def _domain_gone(text: str) -> bool:
    """virsh's words for a domain whose QEMU is no longer there."""
    text = text.lower()
    return any(w in text for w in ("domain is not running", "failed to get domain",
                                   "domain not found", "monitor must not be null",
                                   "end of file from qemu monitor", "unable to read from monitor"))


def _error_text(msg: Message) -> str:
    err = msg.get("error")
    return err.get("desc", "") if isinstance(err, dict) else json.dumps(msg)[:80]
