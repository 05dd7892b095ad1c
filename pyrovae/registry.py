"""Names -> constructors for models, priors, guides, objectives, datasets and plugin commands.

A plugin registers itself with ``@register("guide", "diagonal")``; the engine looks it up
with ``get("guide", name)``.  A failed lookup lists the valid names, so a typo on the
command line gets an answer rather than a ``KeyError``.

Plugins are found through the entry-point group ``pyrovae.plugins`` (declared in
``pyproject.toml``, the convention pytest's ``pytest11`` follows): each entry names a
module whose import registers what it offers.  A third-party package adds a model, a
guide or a command by declaring its own entry point; no pyrovae file changes.

Kinds:

- ``model``, ``prior``, ``guide``: factories ``f(cfg, *, x_dim, num_classes, ...)`` of the
  halves of a Pyro pair (:func:`pyrovae.build.build_pair`).  A model taking labels
  registers with ``labels=True``.
- ``objective``: ``f(name) -> ELBO-like`` (:mod:`pyrovae.infer.objectives`).
- ``dataset``: ``f(data_dir=None) -> dict of arrays`` (:mod:`pyrovae.data`).
- ``runner``: a model trained by its own loop rather than by ``fit`` (the VQ-VAE): an
  object with the :class:`pyrovae.runs.ModelRunner` methods.
- ``command``: a :class:`Command` added to the ``pyrovae`` command line.
"""
from __future__ import annotations

import importlib.metadata
from typing import Any, Callable, Dict, NamedTuple

from pyrovae.errors import PyroVAEError

KINDS = ("model", "prior", "guide", "objective", "dataset", "runner", "command")
ENTRY_POINT_GROUP = "pyrovae.plugins"
_REGISTRY: Dict[str, Dict[str, Any]] = {kind: {} for kind in KINDS}
_OPTIONS: Dict[tuple, dict] = {}
_loaded = False


class Command(NamedTuple):
    """A subcommand a plugin adds: ``pyrovae NAME ...``."""

    help: str
    add_flags: Callable  # (argparse parser) -> None
    run: Callable  # (argparse namespace) -> exit status


def register(kind: str, name: str, **options) -> Callable[[Any], Any]:
    """Decorator: make ``obj`` available as ``get(kind, name)``; ``options`` are declared
    facts about it that the engine may ask (:func:`option`), e.g. ``labels=True``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; valid kinds: {', '.join(KINDS)}")

    def decorator(obj):
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = obj
        _OPTIONS[kind, name] = options
        return obj

    return decorator


def load_plugins() -> None:
    """Import every module named in the ``pyrovae.plugins`` entry points (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


def names(kind: str) -> list[str]:
    load_plugins()
    return sorted(_REGISTRY[kind])


def find(kind: str, name: str):
    """The object registered as ``name`` (or its base before ``:``), or None."""
    load_plugins()
    table = _REGISTRY[kind]
    return table.get(name, table.get(name.split(":", 1)[0]))


def get(kind: str, name: str):
    """The object registered as ``name``; a clear error listing valid names otherwise."""
    found = find(kind, name)
    if found is None:
        valid = ", ".join(names(kind)) or "(none registered)"
        raise PyroVAEError(f"unknown {kind} {name!r}; valid {kind}s: {valid}")
    return found


def option(kind: str, name: str, key: str, default=None):
    """A fact declared at registration (``register(kind, name, key=value)``)."""
    get(kind, name)
    registered = name if name in _REGISTRY[kind] else name.split(":", 1)[0]
    return _OPTIONS.get((kind, registered), {}).get(key, default)
