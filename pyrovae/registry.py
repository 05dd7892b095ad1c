"""Names -> constructors for models, priors, guides, objectives and datasets.

A plugin registers itself with ``@register("guide", "diagonal")``; the engine looks it up
with ``get("guide", name)``.  A failed lookup lists the valid names, so a typo on the
command line gets an answer rather than a ``KeyError``.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict

from pyrovae.errors import PyroVAEError

KINDS = ("model", "prior", "guide", "objective", "dataset")
_REGISTRY: Dict[str, Dict[str, Callable]] = {kind: {} for kind in KINDS}

# Modules whose import fills the registry.  Imported lazily so the engine itself
# depends on no model.
PLUGIN_MODULES = (
    "pyrovae.data",
    "pyrovae.objectives",
    "pyrovae.models",
    "pyrovae.models.vqvae",
    "pyrovae.guides",
)


def register(kind: str, name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` available as ``get(kind, name)``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; valid kinds: {', '.join(KINDS)}")

    def decorator(fn: Callable) -> Callable:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = fn
        return fn

    return decorator


def load_plugins() -> None:
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a plugin module not written yet
            if e.name != module:
                raise


def names(kind: str) -> list[str]:
    load_plugins()
    return sorted(_REGISTRY[kind])


def get(kind: str, name: str) -> Callable:
    """The constructor registered as ``name``; a clear error listing valid names otherwise."""
    load_plugins()
    table = _REGISTRY[kind]
    base = name.split(":", 1)[0]  # parameterized names such as "iwae:50"
    if name in table:
        return table[name]
    if base in table:
        return table[base]
    valid = ", ".join(sorted(table)) or "(none registered)"
    raise PyroVAEError(f"unknown {kind} {name!r}; valid {kind}s: {valid}")
