"""Shared test configuration: coroutine tests run on a fresh uvloop event loop each."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import uvloop

ASYNC_TEST_TIMEOUT = 120.0  # seconds; a hung test fails instead of hanging CI


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }

    async def run() -> None:
        await asyncio.wait_for(pyfuncitem.obj(**arguments), ASYNC_TEST_TIMEOUT)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop, debug=False) as runner:
        runner.run(run())
    return True


@pytest.fixture(autouse=True, scope="session")
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Agents keep a data directory under ``$XDG_STATE_HOME`` by default: point it (for
    this process and every agent a test starts) into the test's own temporary tree."""
    import os

    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state-home"))


class Host(NamedTuple):
    """One side of :func:`netns_pair`: a network namespace, the address of its end of
    the veth pair, and that end's name (``ip -n NAMESPACE link set VETH down`` cuts the
    link)."""

    namespace: str
    address: str
    veth: str

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a process in this namespace."""
        return ["ip", "netns", "exec", self.namespace]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns_pair() -> Iterator[tuple[Host, Host]]:
    """Two network namespaces joined by a veth pair, as two hosts on one LAN segment
    (multicast included); both are deleted afterwards, also when the test fails. Needs
    root and iproute2 (``ip``); the test is skipped, saying so, elsewhere."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 ('ip') for network namespaces")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b, veth_a, veth_b = f"ssa{tag}", f"ssb{tag}", f"sva{tag}", f"svb{tag}"
    subnet = f"10.{200 + os.getpid() % 50}.{os.getpid() % 250}"
    try:
        _ip("netns", "add", ns_a)
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("network namespaces are not available here ('ip netns add' failed)")
    try:
        _ip("netns", "add", ns_b)
        _ip("link", "add", veth_a, "netns", ns_a, "type", "veth", "peer", "name", veth_b,
            "netns", ns_b)
        for ns, veth, host in ((ns_a, veth_a, 1), (ns_b, veth_b, 2)):
            _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", veth)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", veth, "up")
        yield Host(ns_a, f"{subnet}.1", veth_a), Host(ns_b, f"{subnet}.2", veth_b)
    finally:
        for ns in (ns_a, ns_b):
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("netns", "del", ns)
