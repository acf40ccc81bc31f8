"""Objects a user names as ``path/to/file.py:NAME``: a task class or a learning rule.

Importing the file runs its code, so it happens only for a name the user gave in this session:
a run folder whose config names a file is resumed only when the user names that file again
(:mod:`mdgl_analysis.training.loop`), and nothing reading a record or a run imports it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple


class Kind(NamedTuple):
    """What a user's file provides: ``noun`` ("class"), ``plural`` ("tasks"), ``what`` it must
    be ("a subclass of ...") and the test ``wanted(obj)``."""

    noun: str
    plural: str
    what: str
    wanted: Callable[[Any], bool]


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace runs, newlines included, become one space),
    at most ``limit`` characters: what a one-line error quotes of a user's code."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_file_name(name: object) -> bool:
    """Whether ``name`` is ``FILE.py:NAME``."""
    if not isinstance(name, str):
        return False
    path, sep, attr = name.rpartition(":")
    return bool(sep) and path.endswith(".py") and bool(attr)


def file_of(name: str) -> Path | None:
    """The absolute path of the file of ``FILE.py:NAME`` (None for any other name)."""
    return Path(name.rpartition(":")[0]).expanduser().resolve() if is_file_name(name) else None


def absolute(name: str) -> str:
    """``FILE.py:NAME`` with the file's path made absolute (a run resumes from any folder);
    other names unchanged."""
    file = file_of(name)
    return f"{file}:{name.rpartition(':')[2]}" if file is not None else name


def load(name: str, key: str, error: type[Exception], kind: Kind) -> Any:
    """The object ``NAME`` of ``FILE.py:NAME``, the file imported once per session.

    Args:
        key: the config key that named it (``task.name``, ``train.rule``), quoted by errors.
        error: the exception class raised, with one line naming ``key = name`` and what broke:
            the file is missing or fails to import, has no ``NAME`` (the file's objects of the
            ``kind`` are listed), or ``NAME`` is not of the ``kind``.
    """
    path_text, _, attr = name.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise error(f"{key} = {name!r}: no such file {path_text!r}")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"mdgl_user_{path.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise error(f"{key} = {name!r}: {path_text!r} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's code: say what broke, in one line
            del sys.modules[module_name]
            raise error(
                f"{key} = {name!r}: importing {path_text!r} failed: {type(err).__name__}: "
                f"{one_line(err)}"
            ) from None
    obj = getattr(module, attr, None)
    if obj is None:
        found = sorted(
            n
            for n, v in vars(module).items()
            if kind.wanted(v) and getattr(v, "__module__", None) == module_name
        )
        raise error(
            f"{key} = {name!r}: {path_text!r} has no {kind.noun} {attr!r}"
            + (f"; {kind.plural} there: {', '.join(found)}" if found else "")
        )
    if not kind.wanted(obj):
        raise error(f"{key} = {name!r}: {attr} is not {kind.what}")
    return obj
