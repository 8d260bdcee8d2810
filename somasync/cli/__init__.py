"""The command line: ``somasync <command>`` (or ``python -m somasync``), in one package.

Each command is a module with a ``main(argv) -> exit status``: ``agent`` (run one node,
events as JSON lines), ``demo`` (a local mesh and its measured delivery) and ``sim``
(the deterministic simulator, also ``python -m somasync.sim``). The load tests keep
their own entry point, ``python -m somasync.bench``. Commands import the public facade
and documented modules only (``tests/test_layering.py`` holds it).
"""

from __future__ import annotations

import importlib
import os
import sys

from somasync.cli.client import COMMANDS as CLIENT_COMMANDS

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "agent": "run one node until stopped; events as JSON lines (see --help)",
    "demo": "run a local mesh on 127.0.0.1 and measure signed-alert delivery",
    "sim": "simulate a mesh of thousands of nodes running the real core",
    "config": "show or check the agent's effective configuration (file, env, flags)",
    "keys": "make and inspect key, certificate and revocation files",
    **CLIENT_COMMANDS,
}

USAGE = ("usage: somasync <command> [options]   (or python -m somasync ...)\n"
         "       somasync --version\n\ncommands:\n" + "".join(
             f"  {name:<8} {summary}\n" for name, summary in COMMANDS.items())
         + "\n'somasync <command> --help' describes each.\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for a usage error)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "--version":
        from somasync import __version__

        print(f"somasync {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    try:
        if command in CLIENT_COMMANDS:
            from somasync.cli import client

            return client.main(command, rest)
        module = importlib.import_module(f"somasync.cli.{command}")
        return int(module.main(rest))
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Unix tools do, and keep
        # the interpreter from reporting the failed flush of stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
