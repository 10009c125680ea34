"""QMP error replies with QEMU's exact texts, taken from ``formats/qemu-<v>/errors.json``.

A QEMU error reply ("Invalid virtqueue number 9") is output vdecode reproduces, not an exception:
these helpers build the ``{"error": {"class", "desc"}}`` value. Where QEMU itself would abort or
crash instead of replying, :func:`qemu_would_abort` builds a reply that says so, since an offline
monitor must answer something and the user must learn what QEMU would have done.
"""

from __future__ import annotations

from typing import Any

from vdecode.profiles import Profile


class QmpError(Exception):
    """Raised inside a command handler to answer with a QMP error (not a vdecode failure)."""

    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc, self.cls = desc, cls

    def reply(self) -> dict[str, Any]:
        return {"error": {"class": self.cls, "desc": self.desc}}


def qmp_error(profile: Profile, key: str, *args: Any, command: str | None = None) -> QmpError:
    """A :class:`QmpError` with the text ``errors.json[key]`` formatted C-style with ``args``.

    ``command`` picks a command's own wording where it differs (``errors.json["commands"]``);
    the error class comes from ``errors.json["classes"]`` (``GenericError`` by default).

    >>> from vdecode.profiles import load_profile
    >>> qmp_error(load_profile("7.2"), "invalid_queue", 9).desc
    'Invalid virtqueue number 9'
    """
    table = profile.table("errors")
    text = table.get("commands", {}).get(command, {}).get(key, table[key])
    classes = table.get("classes", {})
    return QmpError(text % args if args else text, classes.get(key, classes.get("default", "GenericError")))


def qemu_would_abort(what: str) -> QmpError:
    """QEMU 7.2 aborts or crashes here and sends no reply; say so instead of inventing one."""
    return QmpError(f"vdecode: QEMU 7.2 would abort here and send no reply: {what}",
                    "GenericError")


def not_known(what: str) -> QmpError:
    """The inputs do not hold what this reply needs; say which input would."""
    return QmpError(f"vdecode: cannot answer from these inputs: {what}", "GenericError")
