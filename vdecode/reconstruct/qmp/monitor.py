"""An offline QMP monitor: QEMU 7.2's dispatch rules around vdecode's command handlers.

Mirrors ``monitor/qmp.c`` (greeting, capabilities negotiation and its error rewrite),
``qapi/qmp-dispatch.c:qmp_dispatch`` (request shape checks, ``id`` echo, ``CommandNotFound``) and
the generated marshallers' argument checks (``qapi/qobject-input-visitor.c``: members visited in
schema order, then unexpected members). Command handlers raise :class:`QmpError` to answer with
an error. A handler never changes the machine it is given: a command with a side effect in QEMU
(``x-query-virtio-queue-element`` stores ``shadow_avail_idx``, ``virtio_error`` marks a device
broken) returns an :class:`Effect` with the new state, and the monitor answers the next command
from that, so a session replays side effects in order as QEMU did.

Replies are plain values whose ``dict`` order is QEMU's insertion order; ``render/qmp_json.py``
turns them into bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vdecode.frozen import record
from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.error_replies import QmpError, qmp_error
from vdecode.sources.qemu_state import QemuVirtioState
from vdecode.virtio.device import VirtioMachine


@record
class Effect:
    """A command's reply value together with the state QEMU was left in, and what QEMU printed
    on stderr meanwhile (``virtio_error`` texts)."""

    value: Any
    state: QemuVirtioState
    notes: tuple[str, ...] = ()


# checked arguments -> the value of "return" (or an Effect), on the machine as it stands
Handler = Callable[[VirtioMachine, dict[str, Any]], Any]

_UINT64_MAX = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_UINT_LIMITS = {"uint8": (1 << 8) - 1, "uint16": (1 << 16) - 1, "uint32": (1 << 32) - 1,
                "uint64": _UINT64_MAX}


def _is_qnum_int(v: Any) -> bool:
    # QEMU's JSON parser makes integers outside int64/uint64 into doubles (qobject/json-parser.c),
    # and bool is its own QObject type.
    return isinstance(v, int) and not isinstance(v, bool) and _INT64_MIN <= v <= _UINT64_MAX


def check_arguments(profile: Profile, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """Validate ``args`` like QEMU 7.2's generated marshaller for ``command``.

    :return: the arguments converted as the C code sees them (negative integers wrap).
    :raises QmpError: with QEMU's text for the first problem in schema order.
    """
    core = profile.table("qmp_core")
    spec = profile.table("qapi")["commands"].get(command) or core["commands"].get(command) \
        or {"args": []}
    out: dict[str, Any] = {}
    for arg in spec.get("args", []):
        name, typ, optional = arg["name"], arg["type"], arg.get("optional", False)
        if name not in args:
            if optional:
                continue
            raise qmp_error(profile, "missing", name)
        value = args[name]
        if typ == "str":
            if not isinstance(value, str):
                raise qmp_error(profile, "not_string", name)
            out[name] = value
        elif isinstance(typ, str) and typ in _UINT_LIMITS:
            # qobject_input_type_uint64 accepts negative int64 "for backward compatibility",
            # then visit_type_uintN range-checks the wrapped value.
            if not _is_qnum_int(value):
                raise qmp_error(profile, "expects_uint64", name)
            value &= _UINT64_MAX
            if value > _UINT_LIMITS[typ]:
                raise qmp_error(profile, f"expects_{typ}", name)
            out[name] = value
        elif isinstance(typ, list) and typ[0] in core["enums"]:
            if not isinstance(value, list):
                raise QmpError(core["errors"]["not_array"] % name)
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise qmp_error(profile, "not_string", f"{name}[{i}]")
                if item not in core["enums"][typ[0]]:
                    raise QmpError(core["errors"]["bad_enum"] % (f"{name}[{i}]", item))
            out[name] = value
        else:
            out[name] = value
    known = {a["name"] for a in spec.get("args", [])}
    for name in args:
        if name not in known:
            raise qmp_error(profile, "unexpected", name)
    return out


class OfflineMonitor:
    """One QMP session against offline state.

    :param profile: the QEMU version's data (error texts, QAPI command shapes).
    :param machine: the state the first command is answered from.
    :param handlers: command name -> function of the machine and the checked arguments, returning
        the value of ``"return"`` (or an :class:`Effect`) or raising :class:`QmpError`.
    :param version: ``(major, minor, micro)`` for the greeting and ``query-version``.
    :param package: the greeting's package string.

    :attr:`machine` is the state after the commands answered so far; :meth:`take_notes` gives
    what QEMU would have printed on stderr since the last call.
    """

    def __init__(self, profile: Profile, machine: VirtioMachine, handlers: dict[str, Handler],
                 version: tuple[int, int, int], package: str) -> None:
        self.profile = profile
        self.machine = machine
        self.handlers = dict(handlers)
        self.version, self.package = version, package
        self.negotiated = False
        self._notes: list[str] = []

    def take_notes(self) -> list[str]:
        """What QEMU would have printed on stderr since the last call (and forget it)."""
        notes, self._notes = self._notes, []
        return notes

    def _version_info(self) -> dict[str, Any]:
        major, minor, micro = self.version
        return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": self.package}

    def greeting(self) -> dict[str, Any]:
        """``{"QMP": {"version": ..., "capabilities": ["oob"]}}`` as QEMU 7.2 sends it."""
        return {"QMP": {"version": self._version_info(), "capabilities": ["oob"]}}

    def command_names(self) -> list[str]:
        return ["qmp_capabilities", "query-version", "query-commands", *self.handlers]

    def handle(self, request: Any) -> dict[str, Any]:
        """The reply to one parsed request (``id`` echoed when the request is an object with one)."""
        has_id = isinstance(request, dict) and "id" in request
        try:
            value = self._dispatch(request)
            reply: dict[str, Any] = {"return": value}
        except QmpError as err:
            reply = err.reply()
        if has_id:
            reply["id"] = request["id"]
        return reply

    def _dispatch(self, request: Any) -> Any:
        p = self.profile
        if not isinstance(request, dict):
            raise qmp_error(p, "not_object")
        exec_key = None
        for key, value in request.items():
            if key in ("execute", "exec-oob"):
                if not isinstance(value, str):
                    raise qmp_error(p, "member_not_string", key)
                if exec_key is not None:
                    raise qmp_error(p, "member_clash", key, exec_key)
                exec_key = key
            elif key == "arguments":
                if not isinstance(value, dict):
                    raise qmp_error(p, "arguments_not_object")
            elif key != "id":
                raise qmp_error(p, "member_unexpected", key)
        if exec_key is None:
            raise qmp_error(p, "lacks_execute")
        command = request[exec_key]
        args = request.get("arguments", {})
        if exec_key == "exec-oob":
            # QEMU 7.2 qmp_dispatch: exec-oob is only accepted when OOB was negotiated, and then
            # only for allow-oob commands; none of this monitor's commands are.
            raise qmp_error(p, "member_unexpected", exec_key)
        if not self.negotiated:
            if command != "qmp_capabilities":
                raise qmp_error(p, "caps_expected")
            check_arguments(p, command, args)
            self.negotiated = True
            return {}
        if command == "qmp_capabilities":
            raise qmp_error(p, "caps_done")
        handler = self._lookup(command)
        checked = check_arguments(p, command, args)
        result = handler(self.machine, checked)
        if isinstance(result, Effect):
            self.machine = self.machine.with_state(result.state)
            self._notes.extend(result.notes)
            return result.value
        return result

    def _lookup(self, command: str) -> Handler:
        builtin = {"query-version": lambda m, a: self._version_info(),
                   "query-commands": lambda m, a: [{"name": n} for n in self.command_names()]}
        handler = self.handlers.get(command) or builtin.get(command)
        if handler is None:
            raise qmp_error(self.profile, "command_not_found", command)
        return handler
