"""Baseline distillers, one module each, in a lazy registry.

A distiller module defines a :class:`~engine.distillers.base.Distiller` subclass
decorated with ``@register_distiller("name")``; its docstring's first line is the
description shown by ``mgd-train --list-distillers`` and in the GUI. Nothing in a
baseline knows about MGD: the student stage adds the granularity terms around it.
"""

from __future__ import annotations

from engine.registry import Registry

DISTILLERS = Registry("distiller", "engine.distillers", "register_distiller")
register_distiller = DISTILLERS.register


def distiller_names() -> list[str]:
    return DISTILLERS.names()


def describe_distiller(name: str) -> str:
    return DISTILLERS.describe(name)


def distiller_class(name: str):
    """The registered class (imports its module, and torch)."""
    return DISTILLERS.get(name)
