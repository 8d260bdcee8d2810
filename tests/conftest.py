"""Shared test configuration: coroutine tests run on a fresh uvloop event loop each."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

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
