"""The agent's status page (``--http-addr``) in a real headless browser: it shows the
members of a running 3-node mesh and follows one leaving, without a reload.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-
pipe``: it reads commands on its descriptor 3 and writes replies on 4, each a JSON
object ended by a NUL byte), so no browser-automation package is needed. Debian's
``chromium`` package provides the browser (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from somasync.bench.agents import AgentCluster

CHROMIUM = "/usr/bin/chromium"
DEADLINE = 60.0  # generous: each poll ends as soon as its condition holds

pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"needs a headless browser at {CHROMIUM} "
                              f"(apt-get install chromium)"),
]

# Puts our two pipe ends on the descriptors chromium expects, then becomes chromium (a
# shell's `exec 3<&N` would not do: dash opens such descriptors close-on-exec).
_LAUNCH = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
           "os.execv(sys.argv[3], sys.argv[3:])")


class Browser:
    """One headless chromium, driven over its DevTools pipe; stopped on exit (by its
    process group, which it leads: its renderers go with it)."""

    def __init__(self, profile: Path, log: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        arguments = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self._log = log.open("wb")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, str(commands_read), str(replies_write),
                 *arguments], pass_fds=(commands_read, replies_write),
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                # Whatever it writes outside its profile stays in the test's directory.
                env={**os.environ, "HOME": str(profile.parent)}, start_new_session=True)
        finally:
            os.close(commands_read)
            os.close(replies_write)
        self._buffer = b""
        self._next_id = 0

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply (events in between are skipped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + DEADLINE
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                readable, _, _ = select.select([self._replies], [], [], max(0.0, left))
                if not readable:
                    raise TimeoutError(f"chromium did not answer {method} in {DEADLINE} s")
                data = os.read(self._replies, 1 << 16)
                if not data:
                    raise RuntimeError(f"chromium exited ({self.process.poll()})")
                self._buffer += data
            line, _, self._buffer = self._buffer.partition(b"\0")
            reply = json.loads(line)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]

    def open(self, url: str) -> str:
        """A new tab at ``url``; returns the session to talk to it."""
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        return str(self.call("Target.attachToTarget",
                             {"targetId": target, "flatten": True})["sessionId"])

    def evaluate(self, session: str, expression: str) -> Any:
        """The JSON value of ``expression`` in the tab's page."""
        result = self.call("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                os.write(self._commands, json.dumps(
                    {"id": 0, "method": "Browser.close", "params": {}}).encode() + b"\0")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own group: what is left of it
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10.0)
        for descriptor in (self._commands, self._replies):
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self._log.close()


# What the page shows: each member row's name and state, the overlay graph's labels,
# and whether this is still the document the test marked (no reload happened).
_PAGE_STATE = """JSON.stringify({
  rows: [...document.querySelectorAll("#members tr.member")].map((row) =>
    [row.querySelector(".name").textContent, row.querySelector(".state").textContent]),
  graph: [...document.querySelectorAll("#overlay text")].map((t) => t.textContent),
  marked: window.statusTestMark === "same document",
})"""


def _wait_for_page(browser: Browser, session: str, condition: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = json.loads(browser.evaluate(session, _PAGE_STATE))
        if condition(seen):
            return seen
        time.sleep(0.2)
    raise TimeoutError(f"the page did not show {what} within {DEADLINE} s; it showed {seen}")


def test_the_status_page_shows_the_mesh_and_follows_a_member_leaving(tmp_path: Path) -> None:
    names = {"agent-0", "agent-1", "agent-2"}
    with AgentCluster(preset="local") as cluster, \
            Browser(tmp_path / "profile", tmp_path / "chromium.log") as browser:
        seed = cluster.spawn(args=["--http-addr", "127.0.0.1:0"])
        cluster.wait(seed.ready.is_set, "agent-0 to listen", DEADLINE)
        for _ in range(2):
            cluster.spawn(join=[seed.address])
        cluster.wait(lambda: all(a.ready.is_set() for a in cluster.agents), "agents", DEADLINE)
        [ready] = seed.of("ready")
        host, port = ready["http"].rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) > 0

        session = browser.open(f"http://{ready['http']}/")
        shown = _wait_for_page(
            browser, session,
            lambda page: sorted(page["rows"]) == sorted([n, "alive"] for n in names)
            and {"agent-1", "agent-2"} <= set(page["graph"]),
            "all three members alive and both peers in the overlay graph")
        assert shown["rows"][0] == ["agent-0", "alive"]  # the node itself comes first
        browser.evaluate(session, "window.statusTestMark = 'same document'")

        cluster.agents[2].send("stop")  # a graceful leave
        shown = _wait_for_page(
            browser, session,
            lambda page: ["agent-2", "left"] in page["rows"] or ["agent-2", "failed"] in
            page["rows"],
            "agent-2 gone (left or failed)")
        assert shown["marked"], "the page was reloaded rather than updated"
        assert ["agent-1", "alive"] in shown["rows"]
