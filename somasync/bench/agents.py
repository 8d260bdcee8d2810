"""A mesh of ``python -m somasync agent`` processes, watched through their JSON lines.

Used by the membership benchmark and the multi-process tests::

    with AgentCluster(preset="lan") as cluster:
        cluster.start(32)                       # agent 0 is the seed of the others
        cluster.wait(cluster.converged, "32 alive everywhere", within=60)
        cluster.kill(5)                         # SIGKILL, by PID
        cluster.wait(lambda: cluster.all_see(5, "PeerFailed"), "failure seen", 30)

Each agent runs in its own session with ``--lifeline`` (it exits when our end of its
stdin closes), and ``close()`` stops every agent it started by PID: SIGCONT, then
``stop`` on stdin, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

__all__ = ["Agent", "AgentCluster"]


@dataclass(eq=False)
class Agent:
    """One agent process and everything it reported."""

    index: int
    process: subprocess.Popen[bytes]
    node_id: str
    address: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)
    """Set once the agent reported its address."""

    def send(self, line: str) -> None:
        if self.process.stdin is not None and self.process.poll() is None:
            try:
                self.process.stdin.write(line.encode() + b"\n")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["event"] == kind]


class AgentCluster:
    """Starts, watches and stops agent processes on this host (see the module docstring).

    Args:
        preset: timing preset of every agent (``lan``, ``wan``, ``local``).
        host: the address agents bind (127.0.0.1 unless a test set up namespaces).
        extra: more command-line arguments for every agent.
    """

    def __init__(self, *, preset: str = "lan", host: str = "127.0.0.1",
                 extra: Sequence[str] = ()) -> None:
        self.preset = preset
        self.host = host
        self.extra = list(extra)
        self.agents: list[Agent] = []

    def __enter__(self) -> AgentCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- processes -------------------------------------------------------------------

    def spawn(self, *, join: Sequence[str] = (), prefix: Sequence[str] = (),
              host: str | None = None, node_id: str | None = None,
              args: Sequence[str] = ()) -> Agent:
        """Start one agent joining through ``join``; ``prefix`` wraps the command (e.g.
        ``ip netns exec NAME``); ``args`` are more flags for this agent alone."""
        index = len(self.agents)
        node_id = node_id or f"agent-{index}"
        command = [*prefix, sys.executable, "-m", "somasync", "agent", "--lifeline",
                   "--preset", self.preset, "--node-id", node_id,
                   "--bind", f"{host or self.host}:0", *self.extra, *args]
        for seed in join:
            command += ["--join", seed]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   start_new_session=True)
        agent = Agent(index, process, node_id)
        self.agents.append(agent)
        threading.Thread(target=self._read, args=(agent,), daemon=True).start()
        return agent

    def start(self, count: int, *, within: float = 60.0) -> None:
        """Start agent 0, then ``count - 1`` agents joining through it."""
        seed = self.spawn()
        self.wait(seed.ready.is_set, "the seed to listen", within)
        for _ in range(count - 1):
            self.spawn(join=[seed.address])
        self.wait(lambda: all(a.ready.is_set() for a in self.agents), "agents to listen",
                  within)

    def kill(self, index: int) -> None:
        self.agents[index].process.send_signal(signal.SIGKILL)

    def pause(self, index: int) -> None:
        self.agents[index].process.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        self.agents[index].process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop every agent this cluster started (by PID), whatever state it is in."""
        live = [a for a in self.agents if a.process.poll() is None]
        for agent in live:
            with _quiet():
                agent.process.send_signal(signal.SIGCONT)
            agent.send("stop")
            if agent.process.stdin is not None:
                with _quiet():
                    agent.process.stdin.close()
        deadline = time.monotonic() + 10.0
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            for agent in live:
                if signum is not None and agent.process.poll() is None:
                    with _quiet():
                        agent.process.send_signal(signum)
            for agent in live:
                with _quiet():
                    agent.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if all(a.process.poll() is not None for a in live):
                break
            deadline = time.monotonic() + 5.0
        for agent in self.agents:
            for pipe in (agent.process.stdin, agent.process.stdout):
                if pipe is not None:
                    with _quiet():
                        pipe.close()

    def _read(self, agent: Agent) -> None:
        assert agent.process.stdout is not None
        for line in agent.process.stdout:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if event.get("event") == "ready":
                agent.address = event["address"]
                agent.ready.set()
            with agent.lock:
                agent.events.append(event)

    # --- conditions ------------------------------------------------------------------

    @staticmethod
    def wait(condition: Callable[[], bool], what: str, within: float) -> float:
        """Poll ``condition`` until it holds; returns the seconds it took. Raises
        ``TimeoutError`` naming ``what`` after ``within`` seconds."""
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > within:
                raise TimeoutError(f"timed out after {within} s waiting for {what}")
            time.sleep(0.02)
        return time.monotonic() - start

    def alive_counts(self) -> list[int]:
        """Per running agent: members it has seen join and not lost since (itself
        included), from its event stream."""
        return [1 + len(self.view(agent.index, {"PeerJoined", "PeerRecovered"}))
                for agent in self.running()]

    def view(self, index: int, states: set[str]) -> set[str]:
        """Node ids whose latest membership event at agent ``index`` is in ``states``."""
        latest: dict[str, str] = {}
        for event in self.agents[index].events[:]:
            if event["event"] in _MEMBERSHIP_EVENTS:
                latest[event["peer_id"]] = event["event"]
        return {peer for peer, kind in latest.items() if kind in states}

    def converged(self) -> bool:
        """Every running agent sees every other running agent alive."""
        running = self.running()
        names = {a.node_id for a in running}
        return all(self.view(a.index, {"PeerJoined", "PeerRecovered"}) >= names - {a.node_id}
                   for a in running)

    def all_see(self, index: int, kind: str, *, since: float = 0.0) -> bool:
        """Every other running agent reported ``kind`` about agent ``index``."""
        target = self.agents[index].node_id
        return all(any(e["peer_id"] == target and e["t"] >= since for e in a.of(kind))
                   for a in self.running() if a.index != index)

    def first_times(self, index: int, kind: str, *, since: float = 0.0) -> list[float]:
        """Per other running agent, when it first reported ``kind`` about ``index``."""
        target = self.agents[index].node_id
        times = []
        for agent in self.running():
            if agent.index == index:
                continue
            found = [e["t"] for e in agent.of(kind) if e["peer_id"] == target
                     and e["t"] >= since]
            if found:
                times.append(min(found))
        return times

    def running(self) -> list[Agent]:
        return [a for a in self.agents if a.process.poll() is None and a.ready.is_set()
                and not _stopped(a.process.pid)]


_MEMBERSHIP_EVENTS = {"PeerJoined", "PeerSuspected", "PeerFailed", "PeerRecovered",
                      "PeerLeft"}


def _stopped(pid: int) -> bool:
    """True when the process is stopped (SIGSTOP): it cannot report anything."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"T"
    except (OSError, IndexError):
        return False


class _quiet:
    """Ignore errors about processes that are already gone."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        return exc_type is not None and issubclass(exc_type, (OSError, subprocess.TimeoutExpired))
