"""``somasync config``: the agent's effective configuration, and where each value came from.

    somasync config show --config node.toml              # every setting, as text
    somasync config show --config node.toml --format json
    SOMASYNC_GOSSIP__FANOUT=4 somasync config check --config node.toml

Settings come from a preset (``--preset``, default lan), then the TOML file (``--config``
or ``$SOMASYNC_CONFIG``), then ``SOMASYNC_*`` environment variables, then the agent's
flags, each overriding the one before (see :mod:`somasync.cli.configuration` for the file
layout and the variable names). ``check`` prints nothing and exits 0 when the result is
valid; ``show`` prints each setting with its value and source. Both exit 2 naming the
field and where the bad value came from.
"""

from __future__ import annotations

import argparse
import os
import sys

import orjson

from somasync.cli.agent import add_config_arguments, config_path, flag_values, preset_config
from somasync.cli.configuration import resolve
from somasync.errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="somasync config", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["show", "check"])
    parser.add_argument("--format", choices=["text", "json"], default="text")
    add_config_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    options = _parser().parse_args(argv)
    try:
        resolved = resolve(preset_config(options.preset), file=config_path(options),
                           environ=os.environ, flags=flag_values(options))
    except ConfigError as exc:
        print(f"somasync config: {exc}", file=sys.stderr)
        return 2
    if options.action == "check":
        return 0
    settings = resolved.as_dict()
    if options.format == "json":
        sys.stdout.buffer.write(orjson.dumps(settings, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    width = max(len(name) for name in settings)
    for name, entry in settings.items():
        print(f"{name:<{width}}  {entry['value']!s:<24}  {entry['source']}")
    return 0
