"""Lazy registries for models and distillers.

A registry entry is declared in source with a decorator call whose first argument is
a string literal::

    @register_model("resnet8")
    def resnet8(num_classes=100, in_channels=3): ...

Listing the names (and their one-line descriptions, the first docstring line) reads
the package's source files with :mod:`ast` and imports nothing, so the GUI can fill
its drop-downs without paying for ``import torch``. Building an entry imports its
module, whose decorators register the real objects.

Adding a model or a distiller is therefore one new module (or one new decorated
function) in the right package; nothing else needs to change.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    name: str
    module: str  # dotted module path that registers the entry
    description: str  # first line of the docstring


class Registry:
    """A name -> object registry whose listing needs no import of the package's modules."""

    def __init__(self, kind: str, package: str, decorator: str):
        self.kind = kind  # "model", "distiller": used in messages
        self.package = package
        self.decorator = decorator
        self._objects: dict[str, Any] = {}
        self._entries: dict[str, Entry] | None = None

    # -- declaring ---------------------------------------------------------------
    def register(self, name: str) -> Callable[[Any], Any]:
        def wrap(obj: Any) -> Any:
            if name in self._objects and self._objects[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._objects[name] = obj
            return obj

        return wrap

    # -- listing (no imports) ----------------------------------------------------
    def entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = self._scan()
        return self._entries

    def names(self) -> list[str]:
        return list(self.entries())

    def describe(self, name: str) -> str:
        return self.entries()[name].description

    def _scan(self) -> dict[str, Entry]:
        pkg = importlib.util.find_spec(self.package)
        if pkg is None or not pkg.submodule_search_locations:
            raise ImportError(f"cannot find package {self.package}")
        found: dict[str, Entry] = {}
        for location in pkg.submodule_search_locations:
            for info in sorted(pkgutil.iter_modules([location]), key=lambda m: m.name):
                if info.ispkg or info.name.startswith("_"):
                    continue
                path = Path(location) / f"{info.name}.py"
                if not path.exists():
                    continue
                tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
                for node in ast.walk(tree):
                    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                        continue
                    for deco in node.decorator_list:
                        name = self._decorator_name(deco)
                        if name is None:
                            continue
                        doc = (ast.get_docstring(node) or "").strip().splitlines()
                        found[name] = Entry(
                            name=name,
                            module=f"{self.package}.{info.name}",
                            description=doc[0] if doc else "",
                        )
        return found

    def _decorator_name(self, deco: ast.expr) -> str | None:
        if not (isinstance(deco, ast.Call) and deco.args):
            return None
        func = deco.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        arg = deco.args[0]
        if called == self.decorator and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
        return None

    # -- building (imports the one module needed) ---------------------------------
    def get(self, name: str) -> Any:
        if name not in self._objects:
            entries = self.entries()
            if name not in entries:
                raise KeyError(self.unknown_message(name))
            importlib.import_module(entries[name].module)
        if name not in self._objects:  # pragma: no cover - source and runtime disagree
            raise KeyError(f"{self.kind} {name!r} was listed but its module did not register it")
        return self._objects[name]

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"

    def __contains__(self, name: str) -> bool:
        return name in self.entries()
