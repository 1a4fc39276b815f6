"""Reading an experiment file's YAML safely: bounded, fast, strict.

An experiment file is small (the presets are under 2 KiB, a run folder's resolved
``config.yaml`` about 5 KiB) and shallow (4 levels). Anything far outside that is refused
before it costs time or memory:

* the file must be a regular file outside ``/proc``, ``/sys`` and ``/dev`` (those files
  claim to be regular and empty, then read forever or fail), at most
  :data:`MAX_CONFIG_BYTES` (256 KiB, 50x the largest real file), checked by size before
  it is read and again while reading;
* it is parsed with libyaml's C loader where PyYAML has it (``yaml.__with_libyaml__``),
  the pure-Python loader otherwise, with YAML 1.2 booleans (``mode: off`` is a string);
* documents nested deeper than :data:`MAX_YAML_DEPTH`, or whose aliases expand to more than
  :data:`MAX_YAML_NODES` values, are refused before they are constructed;
* a tagged value that does not construct (``!!int 1.5``, ``!!bool maybe``) and a key given
  twice in one mapping are refused with their line.

Every refusal is an :class:`~engine.errors.InputError` (or a ``yaml.YAMLError`` carrying
the line) with one line of text. This module imports no torch.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from engine.errors import InputError

#: limits far above any real experiment file (about 150 settings, 4 levels deep), far below
#: what hurts: alias bombs and absurd nesting are refused before they are expanded
MAX_CONFIG_BYTES = 256 * 1024
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 40
#: where files only pretend to be regular: never an experiment file
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))

_BaseLoader = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
MERGE_TAG = "tag:yaml.org,2002:merge"


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to one short line for a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SafeLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader (libyaml's where present) with YAML 1.2 booleans, refusing
    duplicate keys and turning any failure to construct a value into a ``ConstructorError``
    that names the value and its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # e.g. !!int 1.5, !!float abc, !!bool maybe, !!timestamp 2020-13-45
            what = f"{node.tag.rsplit(':', 1)[-1]} {short_repr(node.value)}" if isinstance(node, yaml.ScalarNode) \
                else node.tag
            raise ConstructorError(None, None, f"cannot read {what} ({type(exc).__name__}: {exc})",
                                   node.start_mark) from None

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:  # unhashable: the base class refuses it with its line
                    continue
                line = key_node.start_mark.line + 1
                if seen:
                    raise ConstructorError(None, None, f"the key {short_repr(key)} is given twice (first on line "
                                           f"{first_line[key]})", key_node.start_mark)
                first_line[key] = line
        return super().construct_mapping(node, deep)


SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
SafeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def _too_deep() -> InputError:
    return InputError(f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep; an experiment file is never "
                      "that deep")


def check_yaml_size(node: yaml.Node) -> None:
    """Refuse recursive aliases, documents nested deeper than :data:`MAX_YAML_DEPTH` and
    documents whose aliases expand to more than :data:`MAX_YAML_NODES` nodes, in time
    linear in the number of distinct nodes (expanded sizes are memoised)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(n: yaml.Node, depth: int) -> int:
        key = id(n)
        if key in on_path:
            raise InputError("the YAML refers to itself (a recursive alias); an experiment file cannot")
        if key in sizes:
            return sizes[key]
        if depth > MAX_YAML_DEPTH:
            raise _too_deep()
        total = 1
        if isinstance(n, (yaml.SequenceNode, yaml.MappingNode)):
            on_path.add(key)
            children = n.value if isinstance(n, yaml.SequenceNode) else [c for pair in n.value for c in pair]
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_YAML_NODES:
                    raise InputError(f"the YAML expands to more than {MAX_YAML_NODES:,} values (an alias bomb?); "
                                     "an experiment file has a few hundred")
            on_path.discard(key)
        sizes[key] = total
        return total

    size(node, 0)


def yaml_load(text: str) -> Any:
    """Parse YAML text safely, refusing hostile documents fast (InputError, or a YAMLError
    with the line for malformed YAML, values that do not construct and duplicate keys)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise InputError(f"the YAML is {len(text):,} characters long; an experiment file is at most "
                         f"{MAX_CONFIG_BYTES:,}")
    loader = SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the pure-Python composer on deep nesting
            raise _too_deep() from None
        except yaml.MarkedYAMLError as exc:  # libyaml stops at 1000 levels itself
            if "nesting depth" in (exc.problem or ""):
                raise _too_deep() from None
            raise
        if node is None:
            return None
        check_yaml_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where and what (``line L, column C: malformed YAML: ...``;
    a value that does not construct or a duplicate key says so without "malformed")."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    kind = "" if isinstance(exc, ConstructorError) else "malformed YAML: "
    return where + kind + problem


def read_config_text(path: str | Path) -> str:
    """The text of an experiment file, refusing (InputError naming the file) what is not a
    small regular text file: a folder, a pipe, a device, a file under /proc or /sys, a file
    larger than :data:`MAX_CONFIG_BYTES`, bytes that are not UTF-8."""
    path = Path(path)
    try:
        real = path.expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        real = path
    if any(real == root or root in real.parents for root in SYSTEM_FOLDERS):
        raise InputError(f"{path}: a system file, not an experiment file")
    try:
        fd = os.open(path.expanduser(), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except ValueError:  # a NUL byte in the path
        raise InputError(f"{path!r}: not a file name (it holds a NUL byte)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{path}: a folder, not an experiment file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file (a pipe, socket or device), not an experiment file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: {info.st_size:,} bytes; an experiment file is at most {MAX_CONFIG_BYTES:,}")
        chunks, total = [], 0
        while total <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if total > MAX_CONFIG_BYTES:
        raise InputError(f"{path}: more than {MAX_CONFIG_BYTES:,} bytes; an experiment file is far smaller")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (not UTF-8)") from None
