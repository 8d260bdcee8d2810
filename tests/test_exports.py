"""The public surface: ``somasync.__all__`` and how the workers package is reached."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import somasync


def generated_dataclass_doc(obj: type) -> str:
    """The __doc__ that @dataclass invents for a class without a docstring."""
    try:
        signature = str(inspect.signature(obj)).replace(" -> None", "")
    except (TypeError, ValueError):
        return ""
    return obj.__name__ + signature


def test_all_has_no_duplicates() -> None:
    assert len(somasync.__all__) == len(set(somasync.__all__))


@pytest.mark.parametrize("name", somasync.__all__)
def test_exported_name_exists(name: str) -> None:
    assert hasattr(somasync, name), f"somasync.__all__ lists {name!r} but it is missing"


@pytest.mark.parametrize(
    "name",
    [
        name for name in somasync.__all__
        if inspect.isclass(getattr(somasync, name, None))
        or inspect.isfunction(getattr(somasync, name, None))
    ],
)
def test_exported_classes_and_functions_are_documented(name: str) -> None:
    obj = getattr(somasync, name)
    # The object's own docstring: a class does not inherit __doc__, and @dataclass fills
    # in a generated signature that does not count as documentation.
    doc = obj.__doc__
    assert doc is not None, f"somasync.{name} has no docstring"
    assert doc.strip(), f"somasync.{name} has an empty docstring"
    if inspect.isclass(obj):
        assert doc != generated_dataclass_doc(obj), f"somasync.{name} has no docstring"


def test_generated_dataclass_doc_is_recognised() -> None:
    """Guard for the check above: a docstring-less dataclass is caught."""
    from dataclasses import dataclass

    @dataclass
    class Bare:
        x: int

    @dataclass
    class Documented:
        """Has one."""

        x: int

    assert Bare.__doc__ == generated_dataclass_doc(Bare)
    assert Documented.__doc__ != generated_dataclass_doc(Documented)


def test_version_is_a_string() -> None:
    assert isinstance(somasync.__version__, str)
    assert somasync.__version__.count(".") >= 2


WORKERS_CHECK = textwrap.dedent("""
    import importlib, sys, types
    module = importlib.import_module("somasync.workers")
    assert isinstance(module, types.ModuleType), module
    assert module.__name__ == "somasync.workers", module.__name__
    import somasync
    assert "workers" not in sys.modules, "importing somasync registered top-level workers"
    try:
        import workers
    except ModuleNotFoundError as exc:
        assert exc.name == "workers", exc.name
        print("top-level workers: not importable")
    else:
        print("top-level workers imported from", getattr(workers, "__file__", None))
        sys.exit(1)
""")


def test_workers_is_importable_only_as_somasync_workers(tmp_path: Path) -> None:
    # A fresh interpreter in an empty directory, so the repository root is not on
    # sys.path: what an installed user sees.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", WORKERS_CHECK], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "top-level workers: not importable" in result.stdout
