"""``somasync keys``: make and inspect the files a secured mesh runs on.

    somasync keys generate --out node.key            a node's (or operator's) key pair
    somasync keys show node.key                      its public key (any key file kind)
    somasync keys certify --operator op.key --name edge-1 --key-of edge-1.key \\
        --days 365 --out edge-1.cert                 the operator vouches for a node
    somasync keys revoke --operator op.key --public-key HEX --sequence 1 \\
        --out revoke-1.json                          the operator's signed revocation

Key files are created with mode 0600 and refused when other users can read them.
``--format json`` prints one JSON object instead of text. Exit status: 0 done, 1 a file
could not be used (the message names it), 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from somasync.core.crypto import Identity
from somasync.core.trust import Certificate, parse_revocation
from somasync.errors import KeyFileError
from somasync.keys import (
    load_certificate,
    load_identity,
    load_revocation,
    revocation_message,
    save_certificate,
    save_identity,
    save_revocation,
)
from somasync.message import Message

__all__ = ["main"]


def _say(options: argparse.Namespace, text: str, fields: dict[str, Any]) -> None:
    if options.format == "json":
        print(orjson.dumps(fields).decode())
    else:
        print(text)


def _public_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError("a public key is 64 hex digits")
    return key


def _generate(options: argparse.Namespace) -> None:
    identity = Identity.generate()
    save_identity(identity, options.out)
    _say(options, f"{options.out}: public key {identity.public_key.hex()}",
         {"file": options.out, "public_key": identity.public_key.hex()})


def _show(options: argparse.Namespace) -> None:
    path = Path(options.file)
    try:
        kind = orjson.loads(path.read_bytes()).get("type")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        kind = None
    if kind == "somasync-certificate":
        cert = load_certificate(path)
        fields = {"file": str(path), "type": "certificate", "name": cert.name,
                  "public_key": cert.public_key.hex(), "issuer": cert.issuer.hex(),
                  "not_before": cert.not_before, "not_after": cert.not_after,
                  "may_publish": cert.may_publish, "signature_ok": cert.signature_ok()}
        _say(options, "\n".join(f"{k}: {v}" for k, v in fields.items()), fields)
    elif kind == "somasync-revocation":
        message = load_revocation(path)
        payload = message.message_type
        revoked = parse_revocation(payload.data) if hasattr(payload, "data") else None
        assert revoked is not None
        assert message.signer_public_key is not None
        fields = {"file": str(path), "type": "revocation", "revokes": revoked.hex(),
                  "operator": message.signer_public_key.hex(),
                  "sequence": message.sequence}
        _say(options, "\n".join(f"{k}: {v}" for k, v in fields.items()), fields)
    else:
        identity = load_identity(path)
        _say(options, identity.public_key.hex(),
             {"file": str(path), "type": "identity", "public_key": identity.public_key.hex()})


def _certify(options: argparse.Namespace) -> None:
    operator = load_identity(options.operator)
    if options.key_of:
        subject = load_identity(options.key_of).public_key
    elif options.public_key:
        subject = options.public_key
    else:
        raise SystemExit("keys certify: give --key-of FILE or --public-key HEX")
    start = int(time.time()) if options.not_before is None else options.not_before
    cert = Certificate.issue(operator, options.name, subject, not_before=start,
                             not_after=start + int(options.days * 86400),
                             may_publish=not options.no_publish)
    save_certificate(cert, options.out)
    _say(options, f"{options.out}: {cert.name} {subject.hex()} valid until {cert.not_after} "
                  f"(unix s), may publish: {cert.may_publish}",
         {"file": options.out, "name": cert.name, "public_key": subject.hex(),
          "not_before": cert.not_before, "not_after": cert.not_after,
          "may_publish": cert.may_publish})


def _revoke(options: argparse.Namespace) -> None:
    operator = load_identity(options.operator)
    message: Message = revocation_message(operator, options.public_key,
                                          sequence=options.sequence)
    save_revocation(message, options.out)
    _say(options, f"{options.out}: revokes {options.public_key.hex()} (publish it from any "
                  f"node; every node keeps it)",
         {"file": options.out, "revokes": options.public_key.hex(),
          "sequence": options.sequence})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="somasync keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=["text", "json"], default="text")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, parents=[common])

    generate = command("generate", "a new key pair in a 0600 file")
    generate.add_argument("--out", required=True, metavar="FILE")
    show = command("show", "what a key, certificate or revocation file holds")
    show.add_argument("file")
    certify = command("certify", "sign a node certificate with an operator key")
    certify.add_argument("--operator", required=True, metavar="FILE")
    certify.add_argument("--name", required=True, help="the node's name (its node_id)")
    certify.add_argument("--key-of", metavar="FILE", help="the node's key file")
    certify.add_argument("--public-key", type=_public_key, metavar="HEX")
    certify.add_argument("--days", type=float, default=365.0)
    certify.add_argument("--not-before", type=int, metavar="UNIX_S")
    certify.add_argument("--no-publish", action="store_true",
                         help="the node may link and relay but not originate messages")
    certify.add_argument("--out", required=True, metavar="FILE")
    revoke = command("revoke", "the operator's signed revocation of a key")
    revoke.add_argument("--operator", required=True, metavar="FILE")
    revoke.add_argument("--public-key", type=_public_key, required=True, metavar="HEX")
    revoke.add_argument("--sequence", type=int, required=True,
                        help="this operator's revocations are numbered 1, 2, 3...")
    revoke.add_argument("--out", required=True, metavar="FILE")
    return parser


def main(argv: list[str]) -> int:
    options = _parser().parse_args(argv)
    action = {"generate": _generate, "show": _show, "certify": _certify,
              "revoke": _revoke}[options.command]
    try:
        action(options)
    except (KeyFileError, ValueError) as exc:
        print(f"somasync keys: {exc}", file=sys.stderr)
        return 1
    return 0
