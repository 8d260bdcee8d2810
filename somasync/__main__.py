"""``python -m somasync <command>``: the agent's command line."""

from __future__ import annotations

import sys

USAGE = """usage: python -m somasync <command> [options]

commands:
  agent    run one node until stopped; events as JSON lines (see --help)
  demo     run a local mesh on 127.0.0.1 and measure signed-alert delivery
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "agent":
        from somasync.agent import main as agent_main

        return agent_main(rest)
    if command == "demo":
        from somasync.demo import main as demo_main

        return demo_main(rest)
    print(f"unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
