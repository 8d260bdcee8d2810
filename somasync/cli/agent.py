"""``somasync agent``: run one node until stopped, reporting what it sees.

    somasync agent --node-id edge-1 --bind 0.0.0.0:7946 --join 10.0.0.5:7946

Every event (members joining, suspected, failed, recovered, leaving; connections;
messages) is printed as one JSON line on stdout with the wall-clock time ``t``, so the
agent can be watched by people and by scripts alike; a received message's payload is a
JSON object (``{"type": "alert", "level": ..., "message": ..., "details": ...}``, binary
data as hex). Commands, one per line on stdin:

    publish <text>          broadcast Alert(level="high", message=<text>)
    publish {"type": "status", "component": "ids", "state": "degraded", "priority": 200}
                            broadcast any payload type (data, structured, binary, command,
                            status, alert) with its fields, optional priority and ttl
    members                 print the membership table
    stats                   print the node's counters
    revoke <file>           publish an operator's revocation ('somasync keys revoke')
    stop                    leave gracefully

With a data directory (``--data-dir``; by default one per fixed port under
``$XDG_STATE_HOME/somasync``) a restarted agent keeps its key and delivers nothing
twice.

With ``--lifeline`` the end of stdin stops the agent too (a supervising script that dies
takes its agents with it). SIGTERM and SIGINT leave gracefully. The library's log
(verdicts, unreachable peers, worker restarts) goes to stderr at ``--log-level`` (warning
by default), as text or as JSON lines (``--log-format json``). Settings come from
``--preset``, then ``--config`` (TOML), then ``SOMASYNC_*`` variables, then the flags
below (``somasync config --help``); ``--metrics-addr`` serves Prometheus metrics and
``--http-addr`` a live status page (``somasync.cli.status``).

``somasync members|stats|publish|monitor|leave`` reach the agent through its private
RPC socket (``--rpc``), or over TCP with a token (``--rpc-addr 127.0.0.1:PORT``; the
token file in the ready event): see ``somasync members --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from somasync.cli.configuration import ENV_PREFIX, resolve
from somasync.cli.rpc import (
    RpcError,
    RpcServer,
    default_directory,
    parse_rpc_addr,
    private_directory,
    read_token,
)
from somasync.cli.status import StatusServer
from somasync.config import (
    DEFAULT_PORT,
    DiscoveryMethod,
    GossipConfig,
    MembershipConfig,
    NodeConfig,
    OverlayConfig,
)
from somasync.core.crypto import Identity
from somasync.core.payload import MessageType, payload_from_json, payload_to_json
from somasync.datadir import default_agent_directory, kept_identity
from somasync.errors import ConfigError, KeyFileError, SomaSyncError
from somasync.keys import load_allowlist, load_certificate, load_identity, load_revocation
from somasync.node import SynapseNodeBuilder

__all__ = ["main"]

PRESETS = {"lan": (GossipConfig.lan, MembershipConfig.lan, OverlayConfig.lan),
           "wan": (GossipConfig.wan, MembershipConfig.wan, OverlayConfig.lan),
           "local": (GossipConfig.local, MembershipConfig.local, OverlayConfig.local)}



def preset_config(name: str) -> NodeConfig:
    """The configuration a preset starts from (before the file, variables and flags)."""
    gossip, membership, overlay = PRESETS[name]
    return NodeConfig(bind_address=f"127.0.0.1:{DEFAULT_PORT}", gossip=gossip(),
                      membership=membership(), overlay=overlay())


def flag_values(options: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives (None: not given); the trust files are read
    here, so a bad one stops the command with its name."""
    values: dict[str, Any] = {
        "node_id": options.node_id, "bind_address": options.bind,
        "bootstrap_peers": options.join or None, "discovery": options.discovery,
        "workers": options.workers, "security.trust": options.trust,
        "data_dir": "" if options.data_dir == "off" else options.data_dir,
        "security.operator_keys": options.operator_key or None}
    try:
        if options.allowlist:
            values["security.allowlist"] = {name: key.hex() for name, key in
                                            load_allowlist(options.allowlist).items()}
        if options.certificate:
            values["security.certificate"] = \
                load_certificate(options.certificate).encode().hex()
    except KeyFileError as exc:
        field = "security.allowlist" if options.allowlist and exc.path == options.allowlist \
            else "security.certificate"
        raise ConfigError(field, str(exc)) from None
    return values


def config_path(options: argparse.Namespace) -> Path | None:
    """``--config``, else ``SOMASYNC_CONFIG``, else none."""
    given = options.config or os.environ.get(f"{ENV_PREFIX}CONFIG")
    return Path(given) if given else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="somasync agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--lifeline", action="store_true",
                        help="stop when stdin closes")
    parser.add_argument("--rpc", metavar="PATH",
                        help="the private RPC socket for 'somasync members|publish|monitor|"
                             "stats|leave' (mode 0600; default $XDG_RUNTIME_DIR/somasync-"
                             "<uid>/agent-<port>.sock; 'off': none)")
    parser.add_argument("--rpc-addr", metavar="HOST:PORT",
                        help="serve the RPC on TCP too, to clients that send the token "
                             "(port 0: any free port; address and token file in the ready "
                             "event); a loopback address unless --rpc-allow-network")
    parser.add_argument("--rpc-token-file", metavar="FILE",
                        help="the token for --rpc-addr (mode 0600; default: a fresh one in "
                             "$XDG_RUNTIME_DIR/somasync-<uid>/rpc-<host>-<port>.token)")
    parser.add_argument("--rpc-allow-network", action="store_true",
                        help="let --rpc-addr be a non-loopback address, open to the "
                             "network (the token is then all that guards the agent, and "
                             "it and every command travel in clear: use a tunnel)")
    parser.add_argument("--metrics-addr", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (the "
                             "'prometheus' extra; port 0: any free port, reported in the "
                             "ready event)")
    parser.add_argument("--http-addr", metavar="HOST:PORT",
                        help="serve a live, read-only status page at http://HOST:PORT/ "
                             "(members, peer scores, message rates, latency, the overlay "
                             "and broadcast tree; its JSON at /api/status; port 0: any free "
                             "port, reported in the ready event); a loopback address unless "
                             "--http-allow-network")
    parser.add_argument("--http-allow-network", action="store_true",
                        help="let --http-addr be a non-loopback address: the page, which "
                             "names every member, its address and key, is then open to "
                             "the network, read by IP address only (no names: DNS "
                             "rebinding)")
    parser.add_argument("--log-level", default="warning",
                        choices=["debug", "info", "warning", "error"],
                        help="the library's log on stderr (default warning)")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="text lines, or one JSON object per line (t, level, logger, "
                             "message)")
    return parser


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps({"t": record.created, "level": record.levelname.lower(),
                             "logger": record.name,
                             "message": record.getMessage()}).decode()


def _configure_logging(level: str, style: str) -> None:
    """The library's log to stderr: stdout carries the event stream."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines() if style == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("somasync")
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def _emit(kind: str, **fields: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps({"event": kind, "t": time.time(), **fields},
                                         default=_jsonable) + b"\n")
    sys.stdout.flush()


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings ``agent`` and ``config`` share (flags override file and variables)."""
    parser.add_argument("--config", metavar="FILE",
                        help="a TOML file (default: $SOMASYNC_CONFIG); see 'somasync "
                             "config --help'")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="lan",
                        help="timings to start from, before the file (default lan)")
    parser.add_argument("--node-id", help="this node's name (default: from its key)")
    parser.add_argument("--bind", help=f"host:port, TCP and UDP (default "
                                       f"127.0.0.1:{DEFAULT_PORT}; port 0: any free port)")
    parser.add_argument("--join", action="append", metavar="HOST:PORT",
                        help="a seed to join through (repeatable); dns:NAME[:PORT] stands "
                             "for every address NAME resolves to, resolved again at each "
                             "retry (a Kubernetes headless service)")
    parser.add_argument("--discovery", action="append", choices=[m.value for m in
                                                                 DiscoveryMethod],
                        help="discovery method (repeatable; default gossip)")
    parser.add_argument("--workers", type=int, help="worker processes (default 0)")
    parser.add_argument("--identity", metavar="FILE",
                        help="this node's key file ('somasync keys generate'; default: a "
                             "fresh key each run)")
    parser.add_argument("--data-dir", metavar="PATH",
                        help="keep the identity, delivered messages and revocations here, "
                             "so a restarted agent is the same member and delivers nothing "
                             "twice (default $XDG_STATE_HOME/somasync/agent-<port> when the "
                             "port is fixed; 'off': keep nothing)")
    parser.add_argument("--trust", choices=["open", "allowlist", "certificates"],
                        help="trust policy (default open)")
    parser.add_argument("--allowlist", metavar="FILE",
                        help="allowlist policy: '<name> <hex key>' per line")
    parser.add_argument("--operator-key", action="append", metavar="HEX",
                        help="certificates policy: an operator's public key (repeatable)")
    parser.add_argument("--certificate", metavar="FILE",
                        help="certificates policy: this node's certificate "
                             "('somasync keys certify')")


async def _run(options: argparse.Namespace) -> int:
    resolved = resolve(preset_config(options.preset), file=config_path(options),
                       environ=os.environ, flags=flag_values(options))
    config = resolved.config
    port = int(config.bind_address.rsplit(":", 1)[1])
    if "data_dir" not in resolved.sources and port != 0:
        config = config.replace(data_dir=str(default_agent_directory(port)))
    try:
        given = load_identity(options.identity) if options.identity else None
    except KeyFileError as exc:
        raise ConfigError("identity", str(exc)) from None
    identity = kept_identity(config.data_dir, given) if config.data_dir \
        else given or Identity.generate()
    if "node_id" not in resolved.sources:
        config = config.replace(node_id="node-" + identity.public_key[:6].hex())
    node, messages, events = (SynapseNodeBuilder().with_config(config)
                              .with_signing_key(identity.signing_key).build())
    # Before the node starts: a bad RPC, metrics or status setting stops the agent
    # before it joins.
    tcp_rpc, token = _tcp_rpc(options)
    status = StatusServer(node, options.http_addr,
                          allow_network=options.http_allow_network) \
        if options.http_addr else None
    metrics = await _serve_metrics(node, options.metrics_addr) if options.metrics_addr \
        else None
    if status is not None:
        try:
            await status.start()
        except ConfigError:
            if metrics is not None:
                metrics.close()
            raise
    try:
        await node.start()
    except BaseException:
        if status is not None:
            await status.close()
        raise
    if metrics is not None:
        await metrics.collector.refresh()  # a scrape right after "ready" sees the node
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    socket_path = None if options.rpc == "off" else Path(options.rpc) if options.rpc else \
        default_directory() / f"agent-{node.listen_address.rsplit(':', 1)[1]}.sock"
    rpc = None if socket_path is None and tcp_rpc is None else RpcServer(
        socket_path, tcp_address=tcp_rpc, token=token,
        token_file=Path(options.rpc_token_file) if options.rpc_token_file else None)

    def report(kind: str, **fields: Any) -> None:
        """An event for stdout and every RPC monitor, the same line for both."""
        stamped = {"t": time.time(), **fields}
        _emit(kind, **stamped)
        if rpc is not None:
            rpc.publish(kind, stamped)

    async def watch_events() -> None:
        with contextlib.suppress(EOFError):
            async for event in events:
                if type(event).__name__ == "MessageReceived":
                    continue  # reported from the messages stream below
                report(type(event).__name__, **dataclasses.asdict(event))  # type: ignore[call-overload]

    async def watch_messages() -> None:
        with contextlib.suppress(EOFError):
            async for message in messages:
                report("message", id=message.id, source=message.source,
                       priority=message.priority, ttl=message.ttl,
                       payload=payload_to_json(message.message_type))

    async def execute(command: str, argument: str) -> tuple[str, dict[str, Any]]:
        """One command, from stdin or the RPC socket: (event kind, fields). A bad one
        raises ValueError naming what is wrong."""
        if command == "publish":
            try:
                payload, options_ = _publication(argument)
                message_id = await node.broadcast_message(payload, **options_)
            except (ValueError, SomaSyncError) as exc:  # e.g. a priority out of range
                raise ValueError(f"publish: {exc}") from None
            return "published", {"id": message_id, "payload": payload_to_json(payload)}
        if command == "members":
            # Scores belong to links (peers this node is connected to), RTTs to probes.
            scores = (await node.get_stats()).core.peer_scores
            return "members", {"members": [
                {**dataclasses.asdict(m), "score": scores.get(m.node_id)}
                for m in node.members()]}
        if command == "stats":
            stats = await node.get_stats()
            return "stats", {"membership": dataclasses.asdict(stats.membership)
                             if stats.membership else None,
                             "messages": stats.messages_processed,
                             "duplicates": stats.duplicates,
                             "peers": stats.peer_stats.healthy_peers,
                             "rejected": stats.rejected,
                             "rpc_refused": dict(rpc.refused) if rpc is not None else {}}
        if command == "revoke":
            try:
                notice = load_revocation(argument)
                await node.broadcast(notice)
            except SomaSyncError as exc:
                raise ValueError(f"revoke: {exc}") from None
            return "published", {"id": notice.id, "revocation": argument}
        if command in ("stop", "leave"):
            stopping.set()
            return "leaving", {}
        raise ValueError(f"unknown command {command!r}")

    async def commands() -> None:
        try:
            mode = os.fstat(sys.stdin.fileno()).st_mode
        except (OSError, ValueError):
            mode = 0
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
            # /dev/null or a file, as service managers give: no commands on stdin (the
            # event loop cannot watch such a descriptor); the RPC socket still serves.
            if options.lifeline:
                stopping.set()
            return
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while not stopping.is_set():
            line = await reader.readline()
            if not line:
                if options.lifeline:
                    stopping.set()
                return
            command, _, argument = line.decode(errors="replace").strip().partition(" ")
            if not command:
                continue
            try:
                kind, fields = await execute(command, argument)
            except ValueError as exc:
                report("error", detail=str(exc))
                continue
            if kind != "leaving":
                report(kind, **fields)

    async def execute_and_report(command: str, argument: str) -> tuple[str, dict[str, Any]]:
        kind, fields = await execute(command, argument)
        if kind != "leaving":
            report(kind, **fields)  # what a client did shows on stdout and in monitors
        return kind, fields

    if rpc is not None:
        rpc.handler = execute_and_report
        try:
            if socket_path is not None and not options.rpc:
                private_directory()  # refuses a default directory others made or can enter
            await rpc.start()
        except (ConfigError, OSError, RpcError) as exc:
            if metrics is not None:
                metrics.close()
            await node.stop()
            if status is not None:
                await status.close()
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("rpc", f"cannot serve {socket_path}: {exc}") from None
    _emit("ready", node_id=node.node_id, address=node.listen_address,
          public_key=node.public_key, metrics=metrics.address if metrics else None,
          http=status.address if status else None,
          rpc=None if socket_path is None else str(socket_path),
          rpc_addr=None if rpc is None else rpc.tcp_address,
          rpc_token_file=None if rpc is None or rpc.token_file is None
          else str(rpc.token_file))
    tasks = [loop.create_task(c) for c in (watch_events(), watch_messages(), commands())]
    await stopping.wait()
    if metrics is not None:
        metrics.close()
    if rpc is not None:
        await rpc.close()
    if status is not None:
        await status.close()
    await node.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    _emit("stopped")
    return 0


def _tcp_rpc(options: argparse.Namespace) -> tuple[tuple[str, int] | None, str | None]:
    """Where to serve the RPC on TCP (None: nowhere) and the given token (None: one is
    generated).

    Raises:
        ConfigError: naming ``rpc_addr`` (no address, or not loopback without
            ``--rpc-allow-network``) or ``rpc_token_file`` (missing, open to others, empty,
            or given without ``--rpc-addr``).
    """
    if not options.rpc_addr:
        if options.rpc_token_file:
            raise ConfigError("rpc_token_file", "is the token for --rpc-addr; give both")
        return None, None
    address = parse_rpc_addr(options.rpc_addr, allow_network=options.rpc_allow_network)
    if not options.rpc_token_file:
        return address, None
    try:
        return address, read_token(Path(options.rpc_token_file))
    except KeyFileError as exc:
        raise ConfigError("rpc_token_file", str(exc)) from None


class _MetricsServer:
    """``/metrics`` in a thread of its own, over a snapshot refreshed on the loop."""

    REFRESH = 2.0  # seconds between statistics snapshots (a scrape reads the latest)

    def __init__(self, collector: Any, server: Any, thread: Any,
                 task: asyncio.Task[None]) -> None:
        self.collector, self.server, self.thread, self.task = collector, server, thread, task
        self.address = f"{server.server_address[0]}:{server.server_port}"

    def close(self) -> None:
        self.task.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)


async def _serve_metrics(node: Any, address: str) -> _MetricsServer:
    try:
        from prometheus_client import CollectorRegistry, start_http_server

        from somasync.metrics import NodeMetrics
    except ImportError:
        raise ConfigError("metrics_addr", "needs the 'prometheus' extra: "
                                          "pip install 'somasync[prometheus]'") from None
    from somasync.config import parse_address

    host, port = parse_address(address, "metrics_addr")
    metrics = NodeMetrics(node)
    registry = CollectorRegistry()
    registry.register(metrics)
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ConfigError("metrics_addr", f"cannot listen on {address}: {exc}") from None
    task = asyncio.get_running_loop().create_task(metrics.refresh_every(
        _MetricsServer.REFRESH))
    return _MetricsServer(metrics, server, thread, task)


def _publication(argument: str) -> tuple[MessageType, dict[str, int]]:
    """What ``publish <argument>`` sends: text is an alert; a JSON object any payload,
    with optional ``priority`` and ``ttl``.

    Raises:
        ValueError: the JSON is invalid or does not describe a payload (the message says
            what is wrong).
    """
    if not argument.startswith("{"):
        return MessageType.Alert(level="high", message=argument, details=None), {}
    try:
        fields = orjson.loads(argument)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    options = {name: fields.pop(name) for name in ("priority", "ttl") if name in fields}
    for name, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    return payload_from_json(fields), options


def main(argv: list[str]) -> int:
    options = _parser().parse_args(argv)
    _configure_logging(options.log_level, options.log_format)
    try:
        return uvloop.run(_run(options))
    except ConfigError as exc:
        print(f"somasync agent: {exc}", file=sys.stderr)
        return 2
    except SomaSyncError as exc:
        print(f"somasync agent: {exc}", file=sys.stderr)
        return 3
