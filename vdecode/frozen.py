"""Immutable containers for the pipeline's values.

Every stage returns new values instead of changing what an earlier stage produced; the records'
dataclasses are ``frozen=True`` and hold their members in these containers, so a stage that tries
to change another's output fails at once (``tests/test_frozen_stages.py`` checks every record).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ("FrozenDict", "FrozenList", "freeze_map", "freeze_deep")


class FrozenDict(dict):
    """A ``dict`` that refuses changes, so it still passes ``isinstance(x, dict)``, JSON-encodes
    and reads like one (the renderers and ``dataclasses.asdict`` take it as it is).

    ``a | b`` gives a new ``FrozenDict``: the way a stage records, say, a new provenance.
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("FrozenDict is immutable: build a new one (d | {k: v})")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __or__(self, other: Mapping) -> FrozenDict:  # type: ignore[override]
        return FrozenDict({**self, **other})

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self):
        # pickle (triage's worker processes, Dask) and deepcopy rebuild through the constructor:
        # dict's default pickling would call the refused __setitem__
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


def freeze_map(items: Mapping[K, V] | Iterable[tuple[K, V]] | None) -> FrozenDict:
    """``items`` as a :class:`FrozenDict` (itself when it already is one)."""
    if isinstance(items, FrozenDict):
        return items
    return FrozenDict(items or {})


class FrozenList(list):
    """A ``list`` that refuses changes: equal to the list it was made from (``== []`` still holds
    for an empty one, as a tuple's would not), JSON-encodes as an array."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("FrozenList is immutable: build a new list")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))

    def __reduce__(self):
        return (FrozenList, (list(self),))


def freeze_deep(obj: Any) -> Any:
    """Parsed JSON made immutable all the way down (objects as :class:`FrozenDict`, arrays as
    :class:`FrozenList`), still equal to what it was made from. For data shared by every caller
    (a profile's tables, read once and memoised), where one caller's change would silently
    become every later answer's."""
    if isinstance(obj, dict):
        return FrozenDict({k: freeze_deep(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return FrozenList(freeze_deep(v) for v in obj)
    return obj
