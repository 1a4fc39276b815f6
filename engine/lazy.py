"""Lazy package attributes (PEP 562): a package lists which submodule defines each public
name, and the submodule (with torch behind it) is imported on the name's first use, so that
importing the package itself stays cheap (the studio starts without ``import torch``)."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, table: dict[str, str], namespace: dict[str, Any]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names in ``table`` (name ->
    submodule) are imported on first use and then kept in its ``namespace`` (its globals())."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
