"""A griffe extension for the documentation site: Sphinx roles in docstrings become links.

The package's docstrings name other objects the Sphinx way (``:func:`configure```,
``:class:`~mdgl_analysis.config.Config```, ``:mod:`.alignment```); mkdocstrings links only
Markdown cross-references. This turns each role into one, resolved where the docstring is
(an imported name, a relative module, a full path), so the API reference links them and
``mkdocs build --strict`` fails on a name that does not exist. Loaded by mkdocs.yml.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const):`(~?)([^`]+)`")
PACKAGE = "mdgl_analysis"
logger = griffe.get_logger("sphinx_roles")
_PACKAGES: dict[str, griffe.Module] = {}


def _target(obj: griffe.Object, name: str) -> str | None:
    """The full path that ``name`` names in the docstring of ``obj``; None outside the
    package (a link to torch or xarray is left as code)."""
    name = name.removesuffix("()")
    if name.startswith("."):
        module = obj.module
        base = module.path if module.is_init_module else module.parent.path
        return base + name
    if name.split(".")[0] == PACKAGE:
        return name
    first, _, rest = name.partition(".")
    scopes = [obj] + ([obj.parent] if obj.parent is not None else [])
    for scope in scopes:
        try:
            full = scope.resolve(first)
        except Exception:  # griffe's NameResolutionError, or an alias it cannot follow
            continue
        return full + ("." + rest if rest else "")
    return None


def _rewrite(obj: griffe.Object) -> None:
    docstring = obj.docstring
    if docstring is None or ":" not in docstring.value:
        return

    def link(match: re.Match) -> str:
        short, name = match.group(1) == "~", match.group(2)
        text = name.removesuffix("()").split(".")[-1] if short else name.lstrip(".")
        target = _target(obj, name)
        if target is None:
            if name.split(".")[0] not in {"torch", "xarray", "xr", "np", "numpy", "pd", "dask"}:
                logger.warning(f"{obj.path}: {match.group(0)} names nothing in this package")
            return f"`{text}`"
        if not target.startswith(PACKAGE + "."):
            return f"`{text}`"
        if not _exists(target):
            logger.warning(f"{obj.path}: {match.group(0)}: {target} does not exist")
            return f"`{text}`"
        # a link where the site shows the target, plain code where it does not
        return f'<autoref identifier="{target}" optional><code>{text}</code></autoref>'

    docstring.value = ROLE.sub(link, docstring.value)


def _exists(path: str) -> bool:
    try:
        _PACKAGES[PACKAGE][path.removeprefix(PACKAGE + ".")]
    except Exception:  # KeyError, or an alias that leads nowhere
        return False
    return True


def _walk(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    _rewrite(obj)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring of the package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path == PACKAGE:
            _PACKAGES[PACKAGE] = pkg
            _walk(pkg, set())
