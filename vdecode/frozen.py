"""Immutable containers for the pipeline's values.

Every stage returns new values instead of changing what an earlier stage produced; the records
are frozen dataclasses (:func:`record`) and hold their members in these containers, so a stage
that tries to change another's output fails at once (``tests/test_frozen_stages.py`` checks every
record).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

T = TypeVar("T", bound=type)

try:                                        # Python 3.11+
    from typing import dataclass_transform
except ImportError:                         # 3.10: type checkers read typing_extensions' instead
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda f: f

__all__ = ("FrozenDict", "FrozenList", "freeze_map", "freeze_deep", "record", "is_frozen")


# type checkers and editors then see a record's fields and __init__ as a dataclass's
@dataclass_transform(field_specifiers=(dataclasses.field,), frozen_default=True)
def record(cls: T | None = None, /, *, frozen: bool = True, eq: bool = True,
           slots: bool = False) -> Any:
    """``@dataclass(frozen=frozen, eq=eq, slots=slots)``, with the methods that make it frozen,
    comparable, hashable and printable shared by every record instead of generated per class.

    Why: Python 3.11's ``dataclass`` compiles each generated method with its own ``exec``, about
    0.1 ms apiece, and a frozen record with equality needs six. The package declares some sixty
    records and one ``--queue`` answer imports about forty, so those methods were a tenth of its
    start-up. With the shared ones only ``__init__`` is generated, here, in one ``exec``
    (:func:`_make_init`):

    * frozen: each field is set once, by ``__init__``; assigning a field again, or any other
      attribute, and deleting one raise :class:`dataclasses.FrozenInstanceError`, as a frozen
      dataclass's do (a ``__post_init__`` still sets derived fields with ``object.__setattr__``).
      ``is_frozen(cls)`` says so; ``__dataclass_params__.frozen`` is ``False``, since the
      dataclass machinery did not make these methods. ``slots=True`` records (no ``__dict__`` to
      tell a first assignment by) are frozen by ``dataclass`` itself;
    * ``repr`` gives the dataclass text; equality and hash are over the fields with
      ``compare=True``, between instances of the same class only; a mutable record with equality
      is unhashable, as a dataclass is.

    ``dataclasses.fields``, ``replace``, ``asdict`` and pickling work as before. A method the
    class defines itself is kept.
    """
    def wrap(c: T) -> T:
        own = set(vars(c))
        undocumented = not vars(c).get("__doc__")
        by_dataclass = frozen and slots
        # the dataclass machinery collects and checks the fields; __init__ is made here, in one
        # exec, setting each field with object.__setattr__ as a frozen dataclass's does
        c = dataclasses.dataclass(c, init=by_dataclass or slots, frozen=by_dataclass, repr=False,
                                  eq=False, slots=slots)
        fields = dataclasses.fields(c)
        if not (by_dataclass or slots) and "__init__" not in own:
            c.__init__ = _make_init(c, fields, frozen)
            if undocumented:                     # dataclass's docstring: the class's signature
                import inspect
                c.__doc__ = c.__name__ + str(inspect.signature(c)).replace(" -> None", "")
        c.__record_repr__ = tuple(f.name for f in fields if f.repr)
        c.__record_key__ = staticmethod(_key_getter(tuple(f.name for f in fields if f.compare)))
        c.__record_frozen__ = frozen
        if frozen and not by_dataclass:
            c.__record_fields__ = frozenset(f.name for f in fields)
            if "__setattr__" not in own:
                c.__setattr__ = _set_once
            if "__delattr__" not in own:
                c.__delattr__ = _refuse_delete
        if "__repr__" not in own:
            c.__repr__ = _record_repr
        if eq and "__eq__" not in own:
            c.__eq__ = _record_eq
            if "__hash__" not in own:
                # dataclass's rule: frozen and eq hash the compared fields, mutable and eq do not
                # hash at all
                c.__hash__ = _record_hash if frozen else None
        return c
    return wrap if cls is None else wrap(cls)


class _Factory:
    """The default of a ``default_factory`` parameter (shown as dataclass shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _make_init(c: type, fields: tuple[dataclasses.Field, ...], frozen: bool
               ) -> Callable[..., None]:
    """``__init__(self, <fields in order>)`` for a record: defaults, ``default_factory`` and
    ``__post_init__`` as a dataclass's; a frozen record's fields set with ``object.__setattr__``,
    a mutable one's by assignment. Records keep to plain fields: an ``InitVar``,
    ``ClassVar``-typed, ``init=False`` or keyword-only field is refused (use ``dataclass``)."""
    if len(fields) != len(c.__dataclass_fields__) or any(
            not f.init or f.kw_only is True or f.name in ("self", "__setattr", "__FACTORY")
            for f in fields):
        raise TypeError(f"{c.__qualname__}: a record has plain fields only (no InitVar, ClassVar, "
                        f"init=False or keyword-only field); declare it with dataclasses.dataclass")
    ns: dict[str, Any] = {"__setattr": object.__setattr__, "__FACTORY": _FACTORY}
    params, body, defaulted = [], [], None
    for f in fields:
        value = f.name
        if f.default is not dataclasses.MISSING:
            ns[f"__default_{f.name}"] = f.default
            params.append(f"{f.name}=__default_{f.name}")
            defaulted = f.name
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"__factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=__FACTORY")
            value = f"__factory_{f.name}() if {f.name} is __FACTORY else {f.name}"
            defaulted = f.name
        elif defaulted is not None:
            raise TypeError(f"non-default argument {f.name!r} follows default argument "
                            f"{defaulted!r}")
        else:
            params.append(f.name)
        body.append(f"__setattr(self, {f.name!r}, {value})" if frozen
                    else f"self.{f.name} = {value}")
    if hasattr(c, "__post_init__"):
        body.append("self.__post_init__()")
    exec(f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"]), ns)
    init = ns["__init__"]
    init.__qualname__ = f"{c.__qualname__}.__init__"
    init.__module__ = c.__module__
    init.__annotations__ = {**{f.name: f.type for f in fields}, "return": None}
    return init


def is_frozen(cls: type) -> bool:
    """Whether instances of dataclass ``cls`` refuse changes (a frozen dataclass or a frozen
    :func:`record`)."""
    return bool(getattr(cls, "__record_frozen__", False) or cls.__dataclass_params__.frozen)


def _set_once(self: Any, name: str, value: Any) -> None:
    # __init__ sets each field once; after it, every field is in __dict__ and nothing may be set
    if name in self.__dict__ or name not in type(self).__record_fields__:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _refuse_delete(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _key_getter(names: tuple[str, ...]) -> Callable[[Any], tuple]:
    if not names:
        return lambda obj: ()
    getter = operator.attrgetter(*names)
    if len(names) == 1:
        return lambda obj: (getter(obj),)
    return getter


def _record_repr(self: Any) -> str:
    body = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__record_repr__)
    return f"{type(self).__qualname__}({body})"


def _record_eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    key = self.__record_key__
    return key(self) == key(other)


def _record_hash(self: Any) -> int:
    return hash(self.__record_key__(self))


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
