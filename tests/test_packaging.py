"""Build a real wheel and check its layout.

``workers/`` is a source folder mapped onto ``somasync.workers`` (see
``[tool.setuptools.package-dir]``): the wheel must hold it under that name only. The
build runs on a copy of the source tree in a temporary directory, so the working tree
gets no ``build/`` or ``*.egg-info`` droppings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def source_files() -> list[str]:
    """Tracked files plus new files not yet committed (ignored ones excluded)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    root = tmp_path_factory.mktemp("packaging")
    source, dist = root / "source", root / "dist"
    names = source_files()
    assert "pyproject.toml" in names
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    # An isolated build (the default): only pyproject's build-system.requires is used.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"wheel build failed:\n{result.stdout}\n{result.stderr}"
    wheels = list(dist.glob("somasync-*.whl"))
    assert len(wheels) == 1, wheels
    archive = zipfile.ZipFile(wheels[0])
    yield archive
    archive.close()


def test_workers_is_packaged_as_somasync_workers(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "somasync/workers/__init__.py" in names
    top_level_workers = [name for name in names if name.startswith("workers/")]
    assert top_level_workers == []


def test_wheel_installs_only_the_somasync_top_level_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    roots = {name.split("/", 1)[0] for name in names if not name.startswith("somasync-")}
    assert roots == {"somasync"}
    (top_level,) = [name for name in names if name.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["somasync"]


def test_wheel_is_typed(wheel: zipfile.ZipFile) -> None:
    assert "somasync/py.typed" in wheel.namelist()


def test_wheel_holds_every_source_module(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    core = sorted(path.name for path in (REPO / "somasync" / "core").glob("*.py"))
    assert {"__init__.py", "wire.py", "payload.py", "endpoint.py"} <= set(core)
    missing_core = [name for name in core if f"somasync/core/{name}" not in names]
    assert missing_core == []
    # Every module of the source tree is in the wheel, workers/ under somasync/workers/.
    expected = {
        name if name.startswith("somasync/") else f"somasync/{name}"
        for name in source_files()
        if name.endswith(".py") and name.startswith(("somasync/", "workers/"))
    }
    assert expected - names == set()


def test_wheel_ships_the_bench_result_schema(wheel: zipfile.ZipFile) -> None:
    # --json output is documented by this file; users validate against the installed copy.
    assert "somasync/bench/schema.json" in wheel.namelist()


def test_wheel_ships_the_status_page(wheel: zipfile.ZipFile) -> None:
    """``agent --http-addr`` serves these files from the package."""
    for name in ("schema.json", "status.html", "status.js", "status.css"):
        assert f"somasync/cli/{name}" in wheel.namelist()


def test_the_wheel_installs_the_somasync_command(wheel: zipfile.ZipFile) -> None:
    [entry_points] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text
    assert "somasync = somasync.cli:main" in text
