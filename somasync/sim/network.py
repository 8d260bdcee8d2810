"""The simulated network: per-pair latency, datagram loss, and fault timings.

Latency is *fixed per unordered pair of nodes*: it is derived from the pair and the run's
seed (a BLAKE2b hash mapped through the distribution's inverse CDF), so it never changes
during a run, both directions agree, and a protocol that prefers low-latency links (the
broadcast tree) can learn which ones they are. Nothing here keeps per-pair state.

Two shapes:

* :class:`Latency` alone: one distribution for every pair. The default, :data:`LAN`, is
  lognormal with a median of 0.5 ms and sigma 0.4 (95 % of pairs between 0.26 and
  0.95 ms), a data centre or campus network.
* :class:`WanModel`: nodes are spread round-robin over regions; a pair's latency is the
  regions' one-way base latency times a small per-pair lognormal factor (sigma 0.1), or
  the intra-region distribution when both sit in one region. :meth:`WanModel.default`
  holds five cloud regions with one-way latencies of half their typical round trips.

Bandwidth is not modelled (a frame takes its latency whatever its size): SomaSync's
frames are small, and what the simulator measures (reliability, redundancy, hops,
latency in hops x link latency) does not depend on it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from statistics import NormalDist

from somasync.errors import ConfigError

__all__ = ["LAN", "Latency", "NetworkModel", "WanModel", "parse_duration"]

_NORMAL = NormalDist()
_KINDS = ("constant", "uniform", "lognormal")


def parse_duration(text: str, field_name: str = "latency") -> float:
    """Seconds from ``"0.5ms"``, ``"200us"``, ``"1.5s"`` or a bare number of seconds.

    Raises:
        ConfigError: naming ``field_name`` when the text is not a duration.
    """
    units = (("us", 1e-6), ("ms", 1e-3), ("s", 1.0))
    value = text.strip()
    scale = 1.0
    for suffix, factor in units:
        if value.endswith(suffix):
            value, scale = value[: -len(suffix)], factor
            break
    try:
        seconds = float(value) * scale
    except ValueError:
        raise ConfigError(field_name, f"expected a duration like '0.5ms', got {text!r}") \
            from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(field_name, f"must be a finite duration >= 0, got {text!r}")
    return seconds


def unit_interval(seed: int, a: int, b: int, salt: bytes = b"") -> float:
    """A number in (0, 1) fixed by ``seed`` and the unordered pair ``(a, b)``."""
    lo, hi = (a, b) if a <= b else (b, a)
    digest = hashlib.blake2b(b"%d:%d:%d:" % (seed, lo, hi) + salt, digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


@dataclass(frozen=True)
class Latency:
    """A one-way latency distribution (seconds). Build with the class methods.

    ``constant(s)``; ``uniform(lo, hi)``; ``lognormal(median, sigma)`` (the log of the
    latency is normal with mean ``log(median)`` and standard deviation ``sigma``).
    """

    kind: str
    first: float
    """``constant``: the latency; ``uniform``: the low end; ``lognormal``: the median."""
    second: float = 0.0
    """``uniform``: the high end; ``lognormal``: sigma; ``constant``: unused."""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError("network.latency", f"kind must be one of {_KINDS}, "
                                                 f"got {self.kind!r}")
        for name, value in (("first", self.first), ("second", self.second)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"network.latency.{name}",
                                  f"must be a finite number >= 0, got {value!r}")
        if self.kind == "uniform" and self.second < self.first:
            raise ConfigError("network.latency", "uniform: high end below low end")
        if self.kind == "lognormal" and self.first <= 0:
            raise ConfigError("network.latency", "lognormal: the median must be > 0")

    @classmethod
    def constant(cls, seconds: float) -> Latency:
        """Every pair has the same latency."""
        return cls("constant", seconds)

    @classmethod
    def uniform(cls, low: float, high: float) -> Latency:
        """Pair latencies spread evenly between ``low`` and ``high`` seconds."""
        return cls("uniform", low, high)

    @classmethod
    def lognormal(cls, median: float, sigma: float) -> Latency:
        """Pair latencies with a long right tail, as measured on real networks."""
        return cls("lognormal", median, sigma)

    @classmethod
    def parse(cls, text: str) -> Latency:
        """From ``"constant:1ms"``, ``"uniform:0.2ms:2ms"`` or ``"lognormal:0.5ms:0.4"``.

        Raises:
            ConfigError: naming ``network.latency`` when the text does not parse.
        """
        kind, _, rest = text.partition(":")
        parts = rest.split(":") if rest else []
        try:
            if kind == "constant" and len(parts) == 1:
                return cls.constant(parse_duration(parts[0], "network.latency"))
            if kind == "uniform" and len(parts) == 2:
                return cls.uniform(parse_duration(parts[0], "network.latency"),
                                   parse_duration(parts[1], "network.latency"))
            if kind == "lognormal" and len(parts) == 2:
                return cls.lognormal(parse_duration(parts[0], "network.latency"),
                                     float(parts[1]))
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError("network.latency", str(exc)) from None
        raise ConfigError("network.latency", "expected constant:D, uniform:LO:HI or "
                                             f"lognormal:MEDIAN:SIGMA, got {text!r}")

    def quantile(self, u: float) -> float:
        """The latency at cumulative probability ``u`` (0 < u < 1)."""
        if self.kind == "constant":
            return self.first
        if self.kind == "uniform":
            return self.first + u * (self.second - self.first)
        return self.first * math.exp(self.second * _NORMAL.inv_cdf(u))

    def describe(self) -> str:
        if self.kind == "constant":
            return f"constant {self.first * 1e3:g} ms"
        if self.kind == "uniform":
            return f"uniform {self.first * 1e3:g}-{self.second * 1e3:g} ms"
        return f"lognormal median {self.first * 1e3:g} ms sigma {self.second:g}"


LAN = Latency.lognormal(0.0005, 0.4)
"""The default: a LAN or data centre, median one-way latency 0.5 ms."""

# One-way latencies (seconds) between five cloud regions: half their typical round trips.
_REGIONS = ("us-east", "us-west", "eu-west", "ap-northeast", "sa-east")
_ONE_WAY_MS = {
    ("us-east", "us-west"): 32.5, ("us-east", "eu-west"): 37.5,
    ("us-east", "ap-northeast"): 75.0, ("us-east", "sa-east"): 57.5,
    ("us-west", "eu-west"): 70.0, ("us-west", "ap-northeast"): 52.5,
    ("us-west", "sa-east"): 87.5, ("eu-west", "ap-northeast"): 110.0,
    ("eu-west", "sa-east"): 92.5, ("ap-northeast", "sa-east"): 127.5,
}


@dataclass(frozen=True)
class WanModel:
    """Nodes in regions; latency depends on the pair's regions (see the module doc).

    Node ``i`` sits in region ``i % len(regions)``.
    """

    regions: tuple[str, ...]
    one_way: dict[tuple[str, str], float]
    """Base one-way latency in seconds between two different regions (either order)."""
    intra: Latency = field(default_factory=lambda: Latency.lognormal(0.001, 0.4))
    """Latency between two nodes of one region."""
    jitter_sigma: float = 0.1
    """Sigma of the per-pair lognormal factor applied to inter-region base latencies."""

    def __post_init__(self) -> None:
        if not self.regions:
            raise ConfigError("network.wan.regions", "needs at least one region")
        for i, a in enumerate(self.regions):
            for b in self.regions[i + 1:]:
                if (a, b) not in self.one_way and (b, a) not in self.one_way:
                    raise ConfigError("network.wan.one_way", f"no latency for {a}-{b}")

    @classmethod
    def default(cls) -> WanModel:
        """Five cloud regions (us-east, us-west, eu-west, ap-northeast, sa-east)."""
        return cls(_REGIONS, {k: v / 1e3 for k, v in _ONE_WAY_MS.items()})

    def region_of(self, node: int) -> str:
        return self.regions[node % len(self.regions)]

    def latency(self, seed: int, a: int, b: int) -> float:
        ra, rb = self.region_of(a), self.region_of(b)
        u = unit_interval(seed, a, b, b"wan")
        if ra == rb:
            return self.intra.quantile(u)
        base = self.one_way.get((ra, rb)) or self.one_way[(rb, ra)]
        return base * math.exp(self.jitter_sigma * _NORMAL.inv_cdf(u))


@dataclass(frozen=True)
class NetworkModel:
    """Latency, loss and the timings of faults, for one simulation run.

    Endpoint links behave like TCP: bytes arrive in order and are never lost, except
    across a partition cut (dropped) or to a crashed node. Membership and overlay
    datagrams behave like UDP: each is lost with probability ``loss``.
    """

    latency: Latency = LAN
    """Latency distribution of every pair (ignored when ``wan`` is set)."""
    wan: WanModel | None = None
    """Regions with their own latencies; None for one flat network."""
    loss: float = 0.0
    """Probability that a datagram (membership, overlay) is lost. Endpoint links are
    reliable (TCP)."""
    link_timeout: float = 5.0
    """Seconds after which a link whose bytes cannot cross (a partition) is closed at
    both ends, and after which a silently failed peer's link is closed. This models an
    application keepalive/idle timeout (TCP's own retransmission timeout is minutes)."""
    detect_delay: float | None = None
    """Seconds after a crash before each neighbour's link to the crashed node closes.
    None: one link latency, the time a TCP reset from the crashed host's kernel takes
    (the process died, the host is up). See ``silent_failures``."""
    silent_failures: bool = False
    """Model crashed *hosts* (power loss, kernel panic): nothing answers, so links close
    only after ``link_timeout`` and connects fail after ``connect_timeout``."""
    connect_timeout: float = 3.0
    """Seconds before a connect to an unreachable address (a silent host, the far side of
    a partition) fails. A connect to a host whose process crashed fails after one round
    trip (reset)."""

    def __post_init__(self) -> None:
        if not isinstance(self.latency, Latency):
            raise ConfigError("network.latency", "must be a Latency")
        if not isinstance(self.loss, int | float) or not 0 <= self.loss < 1:
            raise ConfigError("network.loss", f"must be in [0, 1), got {self.loss!r}")
        for name in ("link_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"network.{name}", f"must be a number > 0, got {value!r}")
        if self.detect_delay is not None and (
                not isinstance(self.detect_delay, int | float) or self.detect_delay < 0
                or not math.isfinite(self.detect_delay)):
            raise ConfigError("network.detect_delay",
                              f"must be a number >= 0 or None, got {self.detect_delay!r}")

    @classmethod
    def lan(cls) -> NetworkModel:
        """One data centre: :data:`LAN` latencies, no loss."""
        return cls()

    @classmethod
    def wide_area(cls) -> NetworkModel:
        """Five regions (:meth:`WanModel.default`), 10 s link timeout."""
        return cls(wan=WanModel.default(), link_timeout=10.0, connect_timeout=5.0)

    def latency_between(self, seed: int, a: int, b: int) -> float:
        """The fixed one-way latency between nodes ``a`` and ``b`` (seconds)."""
        if self.wan is not None:
            return self.wan.latency(seed, a, b)
        if self.latency.kind == "constant":
            return self.latency.first
        return self.latency.quantile(unit_interval(seed, a, b))

    def describe(self) -> str:
        shape = (f"wan {len(self.wan.regions)} regions" if self.wan is not None
                 else self.latency.describe())
        failures = "silent" if self.silent_failures else "reset"
        return (f"{shape}; datagram loss {self.loss:g}; link timeout {self.link_timeout:g} s;"
                f" failures {failures}")
