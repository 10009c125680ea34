"""A build's own feature, status and protocol strings, learned from the replies in a log.

The tables in ``formats/`` are one build's strings. Another build of the same release may print
one differently (Debian's 10.0.13 fixed 10.0.2's ``VIRTIO_NET_F_GUEST_USO4: Driver can receive
USOv6`` to ``VIRTIO_NET_F_GUEST_USO6: …``); one unknown string must not stop every answer. QEMU
builds each list by walking its map in table order and *prepending* (``CONVERT_FEATURES``), so a
reply's list read backwards is in table order: an unknown string sits between the rows of its
known neighbours. Evidence, strongest first:

- ``same description``: exactly one row (in that window, when there is one) has the text after
  ``": "`` (a renamed macro, as in 10.0.13);
- ``same name``: exactly one row has the text before ``":"`` (a reworded description);
- ``position``: exactly one row of the window is not printed by this reply.

A placed string renames its row for this run (replies then print the build's string); a string
nothing places is left out of the bits read back, and a note says which answers lack it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from vdecode.profiles import LearnedLabel, Profile
from vdecode.sources.qmp_log.knowledge import LogKnowledge

__all__ = ("learn_labels",)

_FEATURE_MEMBERS = ("host-features", "guest-features", "backend-features")
_VHOST_FEATURE_MEMBERS = ("features", "acked-features", "backend-features")


def _groups(reply: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """``(section, printed strings)`` of every decoded list in one status reply."""
    did = reply.get("device-id")
    dev = f"devices/{did}"

    def features(value: Any) -> Iterator[tuple[str, list[str]]]:
        if isinstance(value, dict):
            yield "transport", list(value.get("transports", []))
            yield dev, list(value.get("dev-features", []))

    for member in _FEATURE_MEMBERS:
        yield from features(reply.get(member))
    if isinstance(reply.get("status"), dict):
        yield "status", list(reply["status"].get("statuses", []))
    vhost = reply.get("vhost-dev")
    if isinstance(vhost, dict):
        for member in _VHOST_FEATURE_MEMBERS:
            yield from features(vhost.get(member))
        if isinstance(vhost.get("protocol-features"), dict):
            yield "vhost_user_protocol", list(vhost["protocol-features"].get("protocols", []))


def _rows(table: Any, section: str) -> Sequence[dict[str, Any]] | None:
    head, _, dev = section.partition("/")
    if head == "devices":
        entry = table["devices"].get(dev)
        return None if entry is None else entry["rows"]
    return table[head]


def _split(desc: str) -> tuple[str, str]:
    name, sep, text = desc.partition(":")
    return name.strip(), text.strip() if sep else ""


def _place(s: str, printed: list[str], rows: Sequence[dict[str, Any]], key: str
           ) -> tuple[int | None, str]:
    """The row key (bit or mask) of the unknown string ``s`` in ``printed``, and the evidence."""
    index = {row["desc"]: i for i, row in enumerate(rows)}
    in_order = list(reversed(printed))             # CONVERT_FEATURES prepends: back to table order
    at = in_order.index(s)
    before = [index[x] for x in in_order[:at] if x in index]
    after = [index[x] for x in in_order[at + 1:] if x in index]
    lo, hi = (max(before) if before else -1), (min(after) if after else len(rows))
    shown = {index[x] for x in printed if x in index}
    window = [i for i in range(lo + 1, hi) if i not in shown] if lo < hi else []
    name, text = _split(s)
    for how, same in (("same description", lambda r: text and _split(r["desc"])[1] == text),
                      ("same name", lambda r: name and _split(r["desc"])[0] == name)):
        hits = [i for i, r in enumerate(rows) if same(r) and i not in shown]
        inside = [i for i in hits if i in window]
        if len(inside) == 1 or (len(hits) == 1 and not window):
            return rows[(inside or hits)[0]][key], how
    if len(window) == 1:
        return rows[window[0]][key], "position"
    return None, ""


def learn_labels(knowledge: LogKnowledge | None, profile: Profile, source: str = "the log"
                 ) -> tuple[Profile, list[str]]:
    """The profile with the log's unknown strings learned, and a note for each.

    :param source: the log's name, for the notes.
    :return: ``profile`` itself when every printed string is in its tables.
    """
    if knowledge is None:
        return profile, []
    table = profile.table("features")
    learned: dict[tuple[str, str], LearnedLabel] = {}
    for x in knowledge.all("x-query-virtio-status"):
        reply = x.reply.get("return") if isinstance(x.reply, dict) else None
        if not isinstance(reply, dict):
            continue
        for section, printed in _groups(reply):
            rows = _rows(table, section)
            if not rows:
                continue
            known = {r["desc"] for r in rows}
            for s in printed:
                if s in known or (section, s) in learned and learned[section, s].key is not None:
                    continue
                key, how = _place(s, printed, rows, "mask" if section == "status" else "bit")
                where = f"{source} line {x.line_reply or x.line}"
                if key is not None or (section, s) not in learned:
                    learned[section, s] = LearnedLabel(section, key, s, how, where)
    if not learned:
        return profile, []
    notes = []
    for lab in learned.values():
        what = "status" if lab.section == "status" else lab.section.replace("devices/", "device id ")
        if lab.key is None:
            notes.append(f"{lab.source} prints {lab.desc!r} ({what}), which no table row of profile "
                         f"{profile.version} matches and no evidence places: answers leave it out "
                         f"of the bits they read back")
        else:
            field = "mask" if lab.section == "status" else "bit"
            notes.append(f"learned from {lab.source}: this QEMU prints {lab.desc!r} for {what} {field} "
                         f"{lab.key} (by {lab.how}; profile {profile.version}'s table says "
                         f"{_old(table, lab)!r})")
    # after the labels the core's executable gave (session._build_strings): kept, not replaced
    return replace(profile, learned=profile.learned + tuple(learned.values())), notes


def _old(table: Any, lab: LearnedLabel) -> str:
    field = "mask" if lab.section == "status" else "bit"
    return next((r["desc"] for r in _rows(table, lab.section) or () if r.get(field) == lab.key), "")
