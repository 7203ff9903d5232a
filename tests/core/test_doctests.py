"""Every module's docstring examples run (the River convention: runnable examples, checked).

`testpaths` collects only tests/, so without this the examples in the modules would rot
unnoticed. Each installed keywatch module is imported by its namespaced name and its doctests
run with `doctest.testmod`; a module without examples passes trivially.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import keywatch

PACKAGES = ["keywatch", "keywatch.stream", "keywatch.models", "keywatch.sinks", "keywatch.dashboards",
            "keywatch.stream.connectors", "keywatch.sinks.revocation", "keywatch.sinks.channels"]


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(mod.__path__) if not m.ispkg]
    return sorted(set(names))


def test_every_package_is_searched():
    assert keywatch.__path__ and "keywatch.stream.launcher" in _modules() and len(_modules()) > 100


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples failed in {name}"
