"""A light stand-in for ``@dataclass`` on the wrapper's hot path.

``dataclasses`` imports ``inspect`` and generates code per class: ~12 ms of a hit that
should cost ~20 ms in all. A :class:`Record` subclass lists its fields in ``__slots__``
(positional order) and their defaults in ``_defaults``; a callable default (``list``,
``dict``, a lambda) is a factory called per instance. Fields without a default are
required. Records compare equal field by field and print like dataclasses.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["Record"]


class Record:
    __slots__: tuple[str, ...] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional arguments")
        for name, value in zip(names, args, strict=False):  # fewer args: defaults below
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
            elif name in self._defaults:
                default = self._defaults[name]
                setattr(self, name, default() if callable(default) else default)
            else:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown field(s) {', '.join(sorted(kwargs))}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq=True

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"
