"""The agent's configuration: a preset, then a TOML file, then ``SOMASYNC_*`` variables,
then command-line flags, each overriding the one before.

A file maps onto the validated config dataclasses: top-level keys are
:class:`~somasync.config.NodeConfig` fields, and the ``[gossip]``, ``[membership]`` and
``[overlay]`` and ``[security]`` tables are :class:`~somasync.config.GossipConfig`,
:class:`~somasync.config.MembershipConfig`, :class:`~somasync.config.OverlayConfig` and
:class:`~somasync.config.SecurityConfig` (keys and certificates as hex; the allowlist a
table of ``name = "<hex key>"``)::

    node_id = "edge-7"
    bind_address = "10.0.0.7:7946"
    bootstrap_peers = ["10.0.0.5:7946"]

    [gossip]
    anti_entropy_interval = 1.0
    trusted_keys = ["<64 hex digits>", ...]

    [membership]
    probe_interval = 0.5

An environment variable names a top-level field in capitals (``SOMASYNC_NODE_ID``) or a
table's field after a double underscore (``SOMASYNC_GOSSIP__FANOUT``); lists are
comma-separated. Every value is checked by the dataclass it lands in; an error names the
field and where the value came from.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from somasync.config import (
    DiscoveryMethod,
    GossipConfig,
    MembershipConfig,
    NodeConfig,
    OverlayConfig,
    SecurityConfig,
)
from somasync.errors import ConfigError

__all__ = ["ENV_PREFIX", "Resolved", "resolve"]

ENV_PREFIX = "SOMASYNC_"
SECTIONS: dict[str, type[Any]] = {"gossip": GossipConfig, "membership": MembershipConfig,
                                  "overlay": OverlayConfig, "security": SecurityConfig}
_HEX_KEY_SETS = ("gossip.trusted_keys", "security.operator_keys")


@dataclass(frozen=True)
class Resolved:
    """The effective configuration and where each value that is not a default came from."""

    config: NodeConfig
    sources: dict[str, str]
    """Dotted field name (``gossip.fanout``) -> ``"file node.toml"``, ``"env
    SOMASYNC_GOSSIP__FANOUT"`` or ``"flag"``."""

    def as_dict(self) -> dict[str, Any]:
        """Every field with its value and source (``default`` when nobody set it)."""
        out: dict[str, Any] = {}
        for name, value in _flatten(self.config).items():
            out[name] = {"value": value, "source": self.sources.get(name, "default")}
        return out


def resolve(base: NodeConfig, *, file: Path | None, environ: Mapping[str, str],
            flags: Mapping[str, Any]) -> Resolved:
    """Apply the file, then the environment, then ``flags`` (dotted names, already
    typed) to ``base``.

    Raises:
        ConfigError: a value is invalid, unknown or of the wrong type; the field names
            it and the message says where it came from.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if file is not None:
        where = f"file {file}"
        for name, value in _read_file(file).items():
            values[name] = _coerce(name, value, where)
            sources[name] = where
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX) or key == f"{ENV_PREFIX}CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower().replace("__", ".")
        where = f"env {key}"
        values[name] = _coerce(name, _parse_env(name, text, where), where)
        sources[name] = where
    for name, value in flags.items():
        if value is not None:
            values[name] = _coerce(name, value, "flag")
            sources[name] = "flag"
    return Resolved(_apply(base, values, sources), sources)


def _read_file(path: Path) -> dict[str, Any]:
    where = f"file {path}"
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(key, f"must be a table ({where})")
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = item
        else:
            flat[key] = value
    return flat


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_of(name: str, where: str) -> Any:
    section, _, field_name = name.rpartition(".")
    cls = SECTIONS.get(section) if section else NodeConfig
    types = _field_types(cls) if cls is not None else {}
    if not field_name or field_name not in types or (not section and field_name in SECTIONS):
        raise ConfigError(name, f"no such setting ({where})")
    return types[field_name]


def _parse_env(name: str, text: str, where: str) -> Any:
    kind = _type_of(name, where)
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {text!r} ({where})")
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {text!r} ({where})") from None
    if kind is str or kind is bytes:
        return text
    items = [item.strip() for item in text.split(",") if item.strip()]
    if name == "security.allowlist":
        pairs = [item.partition("=") for item in items]
        if not all(separator for _, separator, _ in pairs):
            raise ConfigError(name, f"must be name=<hex key>,... ({where})")
        return {entry.strip(): key.strip() for entry, _, key in pairs}
    return items


def _coerce(name: str, value: Any, where: str) -> Any:
    """``value`` in the type of the field ``name`` (lists to tuples and sets, hex keys to
    bytes); a mismatch raises ConfigError."""
    kind = _type_of(name, where)
    origin = typing.get_origin(kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (bool, int, float, str):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(name, f"must be {kind.__name__}, got {value!r} ({where})")
        return value
    if kind is bytes:
        try:
            return bytes.fromhex(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be hex, got {value!r} ({where})") from None
    if name == "security.allowlist":
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"must be a table of name = \"<hex key>\" ({where})")
        try:
            return {str(entry): bytes.fromhex(key) for entry, key in value.items()}
        except (TypeError, ValueError):
            raise ConfigError(name, f"must map names to hex keys ({where})") from None
    if not isinstance(value, list | tuple):
        raise ConfigError(name, f"must be a list, got {value!r} ({where})")
    if origin is tuple:
        return tuple(value)
    if kind == frozenset[DiscoveryMethod]:
        try:
            return frozenset(DiscoveryMethod(item) for item in value)
        except ValueError:
            raise ConfigError(name, f"must name discovery methods "
                                    f"{[m.value for m in DiscoveryMethod]} ({where})") from None
    if name in _HEX_KEY_SETS:
        try:
            return frozenset(bytes.fromhex(item) for item in value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be hex-encoded public keys ({where})") from None
    raise ConfigError(name, f"cannot be set here ({where})")


def _apply(base: NodeConfig, values: dict[str, Any], sources: dict[str, str]) -> NodeConfig:
    top = {k: v for k, v in values.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if "." in key:
            section, _, field_name = key.partition(".")
            nested.setdefault(section, {})[field_name] = value
    try:
        sections = {section: dataclasses.replace(getattr(base, section), **changes)
                    for section, changes in nested.items()}
        return dataclasses.replace(base, **top, **sections)
    except ConfigError as exc:
        # The dataclasses name nested fields with their table ("gossip.fanout"), as the
        # sources do: say where the offending value came from, if anyone set it.
        where = sources.get(exc.field)
        raise ConfigError(exc.field, f"{str(exc).partition(': ')[2]}"
                                     + (f" ({where})" if where else "")) from None


def _flatten(config: NodeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in SECTIONS:
            for inner in dataclasses.fields(value):
                out[f"{f.name}.{inner.name}"] = _plain(getattr(value, inner.name))
        else:
            out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset | tuple):
        return sorted(_plain(v) for v in value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, DiscoveryMethod):
        return value.value
    return value
