"""Static layering rules, checked on the source with ``ast`` (nothing is imported).

* ``somasync/core/`` is sans-IO: no event loop, sockets, processes, threads or clock, no
  module-level ``random`` functions (the core takes an injected ``random.Random``), and no
  imports of the layers built on top of it.
* Nothing under ``somasync/`` imports the multiprocess runtime at import time, and never
  under its source-folder name ``workers``.
* ``somasync/errors.py`` and ``somasync/config.py`` sit at the bottom: stdlib and
  ``somasync.errors`` only.
* The simulator (``somasync/sim/``) drives the core and never imports a runtime
  (``somasync.aio``, ``somasync.workers``), not even lazily; the one exception is the
  documented shared-memory leak cleaner, ``somasync.workers.shm``.
* Entry points (the bench, the command line, the simulator, ``tools/`` and the
  top-level ``bench/``) import only public names of other packages: nothing whose
  dotted path has a ``_private`` part outside their own package.
* The bench, the command line and the examples reach a node through the facade only (``somasync``,
  ``somasync.node`` and the documented modules: config, errors, message, events, the
  core, the simulator, the test harness), never a runtime's internals
  (``somasync.aio``, ``somasync.workers``), not even lazily; the one exception is the
  documented shared-memory leak cleaner, ``somasync.workers.shm``.

Each failure names the file and line.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "somasync"
CORE = PACKAGE / "core"

CORE_FORBIDDEN_STDLIB = ("asyncio", "socket", "multiprocessing", "time", "threading",
                         "selectors", "subprocess")
CORE_FORBIDDEN_PACKAGES = ("somasync.aio", "somasync.node", "somasync.message",
                           "somasync.events", "somasync.workers", "workers")
WORKERS = ("somasync.workers", "workers")
RANDOM_ALLOWED = frozenset({"Random"})  # the type of the injected generator


@dataclass(frozen=True)
class ImportRef:
    """One imported name, resolved to an absolute dotted path."""

    target: str  # "a.b" for `import a.b`; "m.n" for `from m import n`
    line: int
    at_import_time: bool  # False when the import sits inside a function body


@dataclass(frozen=True)
class Module:
    path: Path  # relative to the repository root, for messages
    name: str  # dotted module name
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def load(path: Path) -> Module:
    relative = path.relative_to(REPO)
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] == "workers":  # installed as somasync.workers (pyproject package-dir)
        parts.insert(0, "somasync")
    return Module(relative, ".".join(parts), ast.parse(path.read_text(), str(relative)))


def parse(source: str, name: str = "somasync.core.example") -> Module:
    """A Module from source text, for the self-tests of the checkers."""
    path = Path(*name.split(".")).with_suffix(".py")
    return Module(path, name, ast.parse(source))


def package_modules(root: Path) -> list[Module]:
    return [load(path) for path in sorted(root.rglob("*.py"))]


def resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def walk_imports(module: Module) -> Iterator[ImportRef]:
    def visit(node: ast.AST, at_import_time: bool) -> Iterator[ImportRef]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportRef(alias.name, node.lineno, at_import_time)
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, node)
            for alias in node.names:
                yield ImportRef(f"{base}.{alias.name}", node.lineno, at_import_time)
        inside = at_import_time and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, inside)

    yield from visit(module.tree, True)


def is_within(target: str, package: str) -> bool:
    return target == package or target.startswith(package + ".")


def where(module: Module, line: int) -> str:
    return f"{module.path.as_posix()}:{line}"


# --- the rules -----------------------------------------------------------------------

def core_violations(module: Module) -> list[str]:
    refs = list(walk_imports(module))
    found = [
        f"{where(module, ref.line)}: imports {ref.target} ({banned})"
        for ref in refs
        for banned in (*CORE_FORBIDDEN_STDLIB, *CORE_FORBIDDEN_PACKAGES)
        if is_within(ref.target, banned)
    ]
    allowed_random = {"random", *(f"random.{name}" for name in RANDOM_ALLOWED)}
    found += [
        f"{where(module, ref.line)}: imports {ref.target}; use the injected random.Random"
        for ref in refs
        if is_within(ref.target, "random") and ref.target not in allowed_random
    ]
    random_aliases = {
        alias.asname or alias.name
        for node in ast.walk(module.tree) if isinstance(node, ast.Import)
        for alias in node.names if alias.name == "random"
    }
    found += [
        f"{where(module, node.lineno)}: uses random.{node.attr}; use the injected random.Random"
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in random_aliases and node.attr not in RANDOM_ALLOWED
    ]
    return found


def workers_violations(module: Module) -> list[str]:
    return [
        f"{where(module, ref.line)}: imports {ref.target} at import time"
        for ref in walk_imports(module)
        if ref.at_import_time and any(is_within(ref.target, name) for name in WORKERS)
    ]


def top_level_workers_violations(module: Module) -> list[str]:
    """Anywhere, even in a function: the folder name is not an importable package."""
    return [
        f"{where(module, ref.line)}: imports {ref.target}; import somasync.workers instead"
        for ref in walk_imports(module)
        if is_within(ref.target, "workers")
    ]


def foundation_violations(module: Module) -> list[str]:
    return [
        f"{where(module, ref.line)}: imports {ref.target}, neither stdlib nor somasync.errors"
        for ref in walk_imports(module)
        if ref.target.partition(".")[0] not in sys.stdlib_module_names
        and not is_within(ref.target, "somasync.errors")
    ]


def sim_violations(module: Module) -> list[str]:
    """Anywhere, even in a function: the simulator drives the core, never a runtime."""
    return [
        f"{where(module, ref.line)}: imports {ref.target}; the simulator drives the sans-IO "
        "core, never the asyncio or multiprocess runtime"
        for ref in walk_imports(module)
        if any(is_within(ref.target, name) for name in ("somasync.aio", *WORKERS))
    ]


FACADE_ONLY_FORBIDDEN = ("somasync.aio", *WORKERS)
FACADE_ONLY_ALLOWED = ("somasync.workers.shm",)
"""The documented leak cleaner for segments of a SIGKILLed sharded node (tools/shm_gc.py
is its command line): the bench uses it after killing a node on purpose."""


def facade_violations(module: Module) -> list[str]:
    """Anywhere, even in a function: the bench and the command line use a node the way
    an application does, so what they measure and run is what users get."""
    return [
        f"{where(module, ref.line)}: imports {ref.target}; use the facade (somasync, "
        "somasync.node) instead of a runtime's internals"
        for ref in walk_imports(module)
        if any(is_within(ref.target, name) for name in FACADE_ONLY_FORBIDDEN)
        and not any(is_within(ref.target, name) for name in FACADE_ONLY_ALLOWED)
    ]


def private_name_violations(module: Module) -> list[str]:
    """Entry points (bench, command line, simulator, tools) use other packages' public
    names only: a private helper may change without notice."""
    found = []
    for ref in walk_imports(module):
        parts = ref.target.split(".")
        if parts[0] != "somasync":
            continue
        for depth, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:depth])
                if not is_within(owner, module.package):
                    found.append(f"{where(module, ref.line)}: imports {ref.target}, private "
                                 f"to {owner}")
                break
    return found


Rule = Callable[[Module], list[str]]


def check(modules: list[Module], rule: Rule) -> None:
    assert modules, "no modules found: the test is looking in the wrong place"
    found = [violation for module in modules for violation in rule(module)]
    assert not found, "layering violations:\n" + "\n".join(found)


# --- the tests on the real package ---------------------------------------------------

def test_core_is_sans_io_and_independent_of_upper_layers() -> None:
    modules = package_modules(CORE)
    assert {m.name for m in modules} >= {"somasync.core.wire", "somasync.core.endpoint"}
    check(modules, core_violations)


def test_nothing_imports_workers_at_import_time() -> None:
    check(package_modules(PACKAGE), workers_violations)


def test_workers_source_never_imports_itself_by_folder_name() -> None:
    folder = REPO / "workers"
    modules = [load(path) for path in sorted(folder.rglob("*.py"))]
    check(modules + package_modules(PACKAGE), top_level_workers_violations)


def test_simulator_never_imports_a_runtime() -> None:
    check(package_modules(PACKAGE / "sim"), sim_violations)


def entry_point_modules() -> list[Module]:
    """The bench, the command line, the simulator, the developer tools and benchmarks."""
    return (package_modules(PACKAGE / "bench") + package_modules(PACKAGE / "sim")
            + package_modules(PACKAGE / "cli") + [load(PACKAGE / "__main__.py")]
            + [load(path) for folder in ("tools", "bench")
               for path in sorted((REPO / folder).glob("*.py"))])


def test_entry_points_import_only_public_names() -> None:
    check(entry_point_modules(), private_name_violations)


def test_bench_command_line_and_examples_use_only_the_facade() -> None:
    check(package_modules(PACKAGE / "bench") + package_modules(PACKAGE / "cli")
          + [load(PACKAGE / "__main__.py")]
          + [load(path) for path in sorted((REPO / "examples").glob("*.py"))],
          facade_violations)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from somasync.aio.node import SynapseNode", True),
        ("def f():\n    from somasync.aio.local import LocalRuntime", True),
        ("import somasync.workers.supervisor", True),
        ("def f():\n    from somasync.workers import shm", False),
        ("from somasync import SynapseNode, Peer", False),
        ("from somasync.node import SynapseNodeBuilder", False),
        ("from somasync.core.payload import MessageType", False),
    ],
)
def test_facade_checker(source: str, flagged: bool) -> None:
    assert bool(facade_violations(parse(source, "somasync.bench.example"))) is flagged


@pytest.mark.parametrize(
    ("source", "name", "flagged"),
    [
        ("from somasync.config import _require", "somasync.bench.settings", True),
        ("from somasync.core.endpoint import _Link", "tools.example", True),
        ("import somasync.workers._internal", "somasync.sim.engine", True),
        ("from somasync.config import require", "somasync.bench.settings", False),
        ("from somasync.bench._node import serve", "somasync.bench.runner", False),
        ("from . import _node", "somasync.bench.runner", False),
        ("from __future__ import annotations", "tools.example", False),
    ],
)
def test_private_name_checker(source: str, name: str, flagged: bool) -> None:
    found = private_name_violations(parse(source, name))
    assert bool(found) is flagged, found


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from somasync.aio.node import SynapseNode", True),
        ("def f():\n    from somasync.workers import shm", True),
        ("from somasync.core.endpoint import Endpoint", False),
    ],
)
def test_sim_checker(source: str, flagged: bool) -> None:
    assert bool(sim_violations(parse(source, "somasync.sim.example"))) is flagged


@pytest.mark.parametrize("name", ["errors.py", "config.py"])
def test_foundation_modules_import_only_stdlib_and_errors(name: str) -> None:
    check([load(PACKAGE / name)], foundation_violations)


# --- the checkers catch what they should (so the tests above can fail) -------------

@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio", "somasync/core/example.py:1: imports asyncio"),
        ("\n\nimport asyncio.tasks", "somasync/core/example.py:3: imports asyncio.tasks"),
        ("from time import monotonic", "imports time.monotonic"),
        ("def f():\n    import socket", "example.py:2: imports socket"),
        ("import threading as t", "imports threading"),
        ("import selectors, subprocess", "imports subprocess"),
        ("from multiprocessing import shared_memory", "imports multiprocessing"),
        ("from somasync.aio.node import SynapseNode", "imports somasync.aio.node"),
        ("from somasync import message", "imports somasync.message"),
        ("from .. import events", "imports somasync.events"),
        ("from ..node import SynapseNodeBuilder", "imports somasync.node"),
        ("import somasync.workers", "imports somasync.workers"),
        ("from random import shuffle", "imports random.shuffle"),
        ("import random\nx = random.random()", "example.py:2: uses random.random"),
        ("import random as r\nr.choice([1])", "uses random.choice"),
        ("import random\nf = random.sample", "uses random.sample"),
        ("import random\nrandom.seed(1)", "uses random.seed"),
        ("import random\nrandom.randint(1, 2)", "uses random.randint"),
        ("import random\nrandom.shuffle([])", "uses random.shuffle"),
    ],
)
def test_core_checker_flags(source: str, expected: str) -> None:
    found = core_violations(parse(source))
    assert any(expected in violation for violation in found), found


@pytest.mark.parametrize(
    "source",
    [
        "import random\ndef f(rng: random.Random) -> None:\n    rng.shuffle([])",
        "from random import Random",
        "from somasync.core import events, wire",
        "from . import events",
        "from somasync.config import GossipConfig",
        "import datetime\nimport hashlib",
        "from somasync.core.events import RejectReason",
    ],
)
def test_core_checker_allows(source: str) -> None:
    assert core_violations(parse(source)) == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import somasync.workers", True),
        ("from somasync import workers", True),
        ("from somasync.workers import supervisor", True),
        ("from .. import workers", True),  # relative to somasync.aio
        ("import workers", True),
        ("if True:\n    import somasync.workers", True),
        ("class C:\n    import somasync.workers", True),
        ("def start():\n    import somasync.workers", False),
        ("async def start():\n    from somasync import workers", False),
        ("import somasync.workers_helpers", False),
    ],
)
def test_workers_checker(source: str, flagged: bool) -> None:
    found = workers_violations(parse(source, "somasync.aio.example"))
    assert bool(found) is flagged, found


def test_top_level_workers_checker() -> None:
    assert top_level_workers_violations(parse("def f():\n    import workers.ring", "x"))
    assert top_level_workers_violations(parse("from workers import ring", "x"))
    assert not top_level_workers_violations(parse("from somasync.workers import ring", "x"))

def test_workers_folder_modules_are_named_as_installed() -> None:
    """Relative imports inside workers/ resolve to somasync.workers.*, not workers.*."""
    module = load(REPO / "workers" / "__init__.py")
    assert module.name == "somasync.workers"
    assert module.package == "somasync.workers"
    assert load(PACKAGE / "core" / "wire.py").name == "somasync.core.wire"
    inside = Module(Path("workers/ring.py"), "somasync.workers.ring", ast.parse(
        "from . import shm\nfrom .ring import RingWriter\nfrom .. import errors"))
    assert [ref.target for ref in walk_imports(inside)] == [
        "somasync.workers.shm", "somasync.workers.ring.RingWriter", "somasync.errors"]
    assert not top_level_workers_violations(inside)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from __future__ import annotations", False),
        ("import dataclasses, math\nfrom typing import Any", False),
        ("from somasync.errors import ConfigError", False),
        ("from somasync import errors", False),
        ("from .errors import ConfigError", False),
        ("import orjson", True),
        ("from somasync.core import wire", True),
        ("from somasync import message", True),
        ("def f():\n    import nacl.signing", True),
    ],
)
def test_foundation_checker(source: str, flagged: bool) -> None:
    found = foundation_violations(parse(source, "somasync.config"))
    assert bool(found) is flagged, found
