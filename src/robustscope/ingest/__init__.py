"""Ingestion: read published evaluation logs into the labelled tensor.

Loaders are registered by name with :func:`register_loader`; the command line
(``robustscope ingest --format NAME``) and model specifications refer to them
by that name. A loader is a function ``load(source, **options) ->
(xarray.Dataset, IngestReport)``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from .. import tensor as _tensor
from .._logging import get_logger
from ..errors import RobustscopeError
from .manifest import IngestReport, manifest_path, write_manifest

log = get_logger("ingest")

Loader = Callable[..., tuple[xr.Dataset, IngestReport]]

_REGISTRY: dict[str, Loader] = {}
_DESCRIPTIONS: dict[str, str] = {}

# Modules that register built-in loaders when imported. Optional ones that
# need extra packages import those lazily inside their load function.
_BUILTIN_MODULES = (
    "multi_prompt",
    "long_table",
    "promptbench",
    "dove",
    "lm_eval",
    "inspect_ai",
    "helm",
    "every_eval_ever",
)


def register_loader(name: str, description: str = "") -> Callable[[Loader], Loader]:
    """Register ``function`` as the loader called ``name`` (decorator)."""

    def decorator(function: Loader) -> Loader:
        if name in _REGISTRY and _REGISTRY[name] is not function:
            raise RobustscopeError(f"a loader called {name!r} is already registered")
        _REGISTRY[name] = function
        _DESCRIPTIONS[name] = description or (function.__doc__ or "").strip().splitlines()[0]
        return function

    return decorator


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith(f"{__name__}.{module}"):
                continue
            raise


def list_loaders() -> dict[str, str]:
    """Return the registered loader names with a one-line description each."""
    _import_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def get_loader(name: str) -> Loader:
    """Return the loader registered as ``name``.

    Raises
    ------
    RobustscopeError
        When no loader has that name; the message lists the valid names and
        the closest match.
    """
    _import_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        suggestion = f" Did you mean {close[0]!r}?" if close else ""
        raise RobustscopeError(f"unknown format {name!r}.{suggestion} Valid formats: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _check_options(name: str, loader: Loader, options: dict[str, Any]) -> None:
    """Raise a readable error for keyword options the loader does not take."""
    parameters = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [p for p in parameters if p != "source"]
    for option in options:
        if option not in parameters:
            close = difflib.get_close_matches(option, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RobustscopeError(f"the {name} loader has no option {option!r}.{hint} Valid options: {', '.join(valid)}")
        _check_option_type(name, option, str(parameters[option].annotation), options[option])


def _top_level_types(annotation: str) -> list[str]:
    """Split a string annotation such as ``"str | Sequence[str] | None"`` at its top-level bars."""
    depth = 0
    part = ""
    parts = []
    for char in annotation:
        depth += char == "["
        depth -= char == "]"
        if char == "|" and depth == 0:
            parts.append(part.strip())
            part = ""
        else:
            part += char
    parts.append(part.strip())
    return parts


def _matches(type_name: str, value: Any) -> bool | None:
    """Whether ``value`` has the type ``type_name``; ``None`` when the name is not one we check."""
    head = type_name.split("[", 1)[0]
    if head in ("Sequence", "list", "tuple", "Iterable"):
        return isinstance(value, (list, tuple))
    if head in ("Mapping", "dict"):
        return isinstance(value, Mapping)
    simple = {"str": (str,), "bool": (bool,), "int": (int,), "float": (int, float), "None": (type(None),)}
    if head in simple:
        return isinstance(value, simple[head]) and not (head in ("int", "float") and isinstance(value, bool))
    return None


def _check_option_type(name: str, option: str, annotation: str, value: Any) -> None:
    """Refuse an option value of the wrong shape, such as a plain string where a list is expected.

    Command-line values that are not valid JSON arrive as strings; a loader
    that iterates over a string would read it letter by letter, so the
    mismatch is reported with the JSON spelling to use instead.
    """
    results = [_matches(part, value) for part in _top_level_types(annotation)]
    if any(result is None for result in results) or any(results):
        return
    hint = ""
    if any(part.split("[", 1)[0] in ("Sequence", "list", "tuple", "Iterable") for part in _top_level_types(annotation)):
        hint = f""" On the command line write it as JSON, for example --option '{option}=["a", "b"]'"""
    elif any(part.split("[", 1)[0] in ("Mapping", "dict") for part in _top_level_types(annotation)):
        hint = f""" On the command line write it as JSON, for example --option '{option}={{"key": "value"}}'"""
    raise RobustscopeError(f"the {name} loader's option {option!r} takes {annotation}, got {value!r}.{hint}")


def ingest(
    source: str | Path | list[str | Path],
    format: str = "multi-prompt",
    *,
    output: str | Path | None = None,
    **options: Any,
) -> xr.Dataset:
    """Read ``source`` with the loader ``format`` and return the tensor.

    Parameters
    ----------
    source
        A file or folder in the loader's format (some loaders take a list).
    format
        Registered loader name; see :func:`list_loaders`.
    output
        If given, write the tensor there as NetCDF and its manifest beside it
        (``<name>.manifest.json``), both atomically.
    **options
        Passed to the loader (for example ``include_invalid=True``).

    Returns
    -------
    xarray.Dataset
        The tensor, with the manifest in ``attrs["manifest"]``.
    """
    loader = get_loader(format)
    _check_options(format, loader, options)
    ds, report = loader(source, **options)
    manifest = report.finish(ds)
    if output is not None:
        _tensor.save(ds, output)
        write_manifest(manifest, manifest_path(output))
    return ds


__all__ = ["IngestReport", "get_loader", "ingest", "list_loaders", "register_loader"]
