"""The commands that talk to a running agent over its private RPC socket (or TCP
with its token).

    somasync members [--format json]          the membership table
    somasync stats [--format json]            the agent's counters
    somasync publish 'text'                   an alert (or a JSON payload, as the agent's
    somasync publish '{"type": "status", "component": "ids", "state": "ok"}'  stdin takes)
    somasync monitor [--count N]              events and messages as JSON lines, as they come
    somasync leave                            the agent leaves the mesh gracefully and exits

With ``--format json`` each command prints its result as one JSON object, and
``monitor`` one object per line, as ``somasync/cli/schema.json`` (JSON Schema) describes.

The agent is found with ``--rpc PATH``, else ``$SOMASYNC_RPC``, else as the one agent
socket of this user (``$XDG_RUNTIME_DIR/somasync-<uid>/``). An agent started with
``--rpc-addr HOST:PORT`` is reached over TCP with ``--rpc-addr HOST:PORT`` (or
``$SOMASYNC_RPC_ADDR``) and its token: ``--rpc-token-file FILE`` (or
``$SOMASYNC_RPC_TOKEN_FILE``), else the token the agent wrote for that address in the same
directory (its ready event's ``rpc_token_file``). Exit status: 0 done, 1 the agent refused
the request or the token (its reason on stderr), 2 usage (a bad address, no token file),
3 no agent could be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from somasync.cli.rpc import RpcError, RpcRefused, find_endpoint, request, stream

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "members": "the membership table of a running agent",
    "stats": "a running agent's counters",
    "publish": "publish a message through a running agent",
    "monitor": "stream a running agent's events and messages",
    "leave": "make a running agent leave the mesh and exit",
}


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"somasync {command}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--rpc", metavar="PATH", help="the agent's RPC socket")
    where.add_argument("--rpc-addr", metavar="HOST:PORT",
                       help="the agent's TCP RPC endpoint (its --rpc-addr; default "
                            "$SOMASYNC_RPC_ADDR)")
    parser.add_argument("--rpc-token-file", metavar="FILE",
                        help="the token for --rpc-addr (default $SOMASYNC_RPC_TOKEN_FILE, "
                             "else the one the agent wrote for that address)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    if command == "publish":
        parser.add_argument("payload", help="text (an alert) or a JSON payload object")
    if command == "monitor":
        parser.add_argument("--count", type=int, help="stop after this many lines")
    return parser


def _table(members: list[dict[str, Any]]) -> str:
    rows = [("NAME", "ADDRESS", "STATE", "INCARNATION", "SCORE", "RTT", "KEY")]
    rows += [(m["node_id"], m["address"], m["state"], str(m["incarnation"]),
              "-" if m.get("score") is None else f"{m['score']:.1f}",
              "-" if m.get("rtt") is None else f"{m['rtt'] * 1000:.1f} ms",
              str(m["public_key"])[:16]) for m in members]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                         strict=True)).rstrip()
                     for row in rows)


def main(command: str, argv: list[str]) -> int:
    options = _parser(command).parse_args(argv)
    try:
        target = find_endpoint(options.rpc, options.rpc_addr, options.rpc_token_file)
    except ValueError as exc:  # ConfigError: a bad address, no token
        print(f"somasync {command}: {exc}", file=sys.stderr)
        return 2
    except RpcError as exc:
        print(f"somasync {command}: {exc}", file=sys.stderr)
        return 3
    try:
        if command == "monitor":
            count = 0
            for event in stream(target):
                if "ok" in event:  # the agent's acknowledgement, not an event
                    if not event["ok"]:
                        print(f"somasync monitor: {event.get('error')}", file=sys.stderr)
                        return 1
                    continue
                print(orjson.dumps(event).decode(), flush=True)
                count += 1
                if options.count is not None and count >= options.count:
                    break
            return 0
        answer = request(target, command, getattr(options, "payload", ""))
    except RpcRefused as exc:
        print(f"somasync {command}: {exc}", file=sys.stderr)
        return 1
    except RpcError as exc:
        print(f"somasync {command}: {exc}", file=sys.stderr)
        return 3
    if not answer.get("ok"):
        print(f"somasync {command}: {answer.get('error')}", file=sys.stderr)
        return 1
    result = answer.get("result", {})
    if options.format == "json":
        print(orjson.dumps(result).decode())
    elif command == "members":
        print(_table(result["members"]))
    elif command == "stats":
        for key, value in result.items():
            print(f"{key}: {orjson.dumps(value).decode()}")
    elif command == "publish":
        print(result["id"])
    else:
        print(answer.get("event", "done"))
    return 0
