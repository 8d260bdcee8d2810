"""Tag patterns of query filters, matched in time linear in the value.

A query's filter comes from the network and runs on every node that receives it, so
its patterns are hostile input. Python's ``re`` backtracks: ``(a|a)*b`` costs 2**n
steps on an n-character value, and even without groups ``.?.?.?…!`` (one optional atom
after another) took 93 s on a 5-character value. Counting quantifiers cannot make that
safe; not backtracking does. A :class:`TagPattern` is a regular expression without
groups, compiled to one automaton per alternative and run by keeping the set of states
reached (Thompson's construction): at most ``len(value) x states`` atom tests, whatever
the pattern.

The language is the part of Python's ``re`` syntax that needs no groups, with the same
meaning under ``re.fullmatch``:

- alternatives ``a|b`` at the top level;
- atoms: a character, ``.`` (anything but a newline), a class ``[a-z0-9_-]`` or
  ``[^…]``, an escaped character ``\\.``, or ``\\d \\w \\s \\D \\W \\S \\t \\n \\r \\f \\v``;
- quantifiers on an atom: ``*``, ``+``, ``?``, ``{m}``, ``{m,}``, ``{,n}``, ``{m,n}``
  (lazy forms accepted, they match the same under a full match).

Refused, with a ValueError that says why: groups, anchors (``^ $ \\b \\A \\Z``; a pattern
always matches the whole value), back references and other escapes, possessive
quantifiers, and patterns whose automaton would exceed :data:`MAX_STATES`.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable

__all__ = ["MAX_STATES", "TagPattern"]

MAX_STATES = 512
"""Automaton states one pattern may have: each atom is one state, ``{m,n}`` is n of
them (``x{0,255}`` is 255). A match costs at most this many atom tests per character."""
MAX_REPEAT = 255  # the largest m or n of {m,n}

_CLASS_ESCAPES = "dwsDWS"
_CHARACTER_ESCAPES = "tnrfv"
_BRACES = re.compile(r"\{([0-9]*)(,?)([0-9]*)\}")  # ASCII digits, as re reads repeats

_Test = Callable[[str], object]


class _Automaton:
    """One alternative: a chain of atoms, each taken once, optionally, or looping."""

    __slots__ = ("loops", "reach", "tests")

    def __init__(self, atoms: list[tuple[_Test, int, int | None]]) -> None:
        tests: list[_Test] = []
        optional: list[bool] = []
        loops: list[bool] = []
        for test, low, high in atoms:
            # x{m,n} is m copies of x then n - m optional ones; x{m,} ends in a loop.
            for _ in range(low):
                tests.append(test)
                optional.append(False)
                loops.append(False)
            extra = 1 if high is None else high - low
            for _ in range(extra):
                tests.append(test)
                optional.append(True)
                loops.append(high is None)
            if len(tests) > MAX_STATES:
                raise ValueError(f"the pattern needs more than {MAX_STATES} states")
        self.tests = tests
        self.loops = loops
        # reach[i]: the last state reachable from i without reading (skipping optional
        # atoms); the final state len(tests) accepts.
        reach = list(range(len(tests) + 1))
        for i in range(len(tests) - 1, -1, -1):
            if optional[i]:
                reach[i] = reach[i + 1]
        self.reach = reach

    def matches(self, value: str) -> bool:
        tests, loops, reach = self.tests, self.loops, self.reach
        final = len(tests)
        active = list(range(reach[0] + 1))
        for char in value:
            # Ascending states in, ascending states out: each state is added once, so a
            # character costs at most one test per state.
            following: list[int] = []
            covered = -1
            for state in active:
                if state < final and tests[state](char):
                    target = state if loops[state] else state + 1
                    end = reach[target]
                    if end > covered:
                        following.extend(range(max(target, covered + 1), end + 1))
                        covered = end
            if not following:
                return False
            active = following
        return active[-1] == final


class TagPattern:
    """A compiled tag pattern (see the module's docstring for the language).

    Raises:
        ValueError: the pattern is outside the language, says where and why.
    """

    __slots__ = ("_alternatives", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._alternatives = [_Automaton(atoms) for atoms in _parse(pattern)]
        if sum(len(a.tests) for a in self._alternatives) > MAX_STATES:
            raise ValueError(f"the pattern needs more than {MAX_STATES} states")

    def matches(self, value: str) -> bool:
        """Whether ``value`` matches the whole pattern (as ``re.fullmatch`` would)."""
        return any(alternative.matches(value) for alternative in self._alternatives)


def _parse(pattern: str) -> list[list[tuple[_Test, int, int | None]]]:
    alternatives: list[list[tuple[_Test, int, int | None]]] = [[]]
    index, end = 0, len(pattern)
    while index < end:
        char = pattern[index]
        if char == "|":
            alternatives.append([])
            index += 1
            continue
        if char in "()":
            raise ValueError("groups are not allowed in a tag pattern")
        if char in "^$":
            raise ValueError(f"no anchors ({char!r}): a tag pattern matches the whole value")
        if char in "*+?" or (char == "{" and _quantifier(pattern, index) is not None):
            raise ValueError(f"nothing to repeat at position {index}")
        atom, index = _atom(pattern, index)
        low: int = 1
        high: int | None = 1
        quantifier = _quantifier(pattern, index)
        if quantifier is not None:
            low, high, index = quantifier
            if pattern[index : index + 1] == "?":
                index += 1  # lazy: the same full matches
            elif pattern[index : index + 1] == "+":
                raise ValueError("possessive quantifiers are not allowed in a tag pattern")
            if index < end and (pattern[index] in "*+?"
                                or (pattern[index] == "{"
                                    and _quantifier(pattern, index) is not None)):
                raise ValueError(f"multiple repeat at position {index}")
        alternatives[-1].append((_test_of(atom), low, high))
    return alternatives


def _atom(pattern: str, index: int) -> tuple[str, int]:
    """The atom at ``index`` as ``re`` source, and the index after it."""
    char = pattern[index]
    if char == "\\":
        escaped = pattern[index + 1 : index + 2]
        if not escaped:
            raise ValueError("a tag pattern cannot end with a backslash")
        if escaped.isalnum() and escaped not in _CLASS_ESCAPES + _CHARACTER_ESCAPES:
            raise ValueError(f"escape \\{escaped} is not allowed in a tag pattern")
        return pattern[index : index + 2], index + 2
    if char == "[":
        close = index + 1
        if pattern[close : close + 1] == "^":
            close += 1
        if pattern[close : close + 1] == "]":
            close += 1  # a "]" first in a class is a member
        while close < len(pattern) and pattern[close] != "]":
            close += 2 if pattern[close] == "\\" else 1
        if close >= len(pattern):
            raise ValueError("unterminated character class in a tag pattern")
        return pattern[index : close + 1], close + 1
    if char == ".":
        return ".", index + 1
    return re.escape(char), index + 1


def _quantifier(pattern: str, index: int) -> tuple[int, int | None, int] | None:
    """(low, high or None, index after) of a quantifier at ``index``, if one is there."""
    char = pattern[index : index + 1]
    if char == "*":
        return 0, None, index + 1
    if char == "+":
        return 1, None, index + 1
    if char == "?":
        return 0, 1, index + 1
    if char != "{":
        return None
    braces = _BRACES.match(pattern, index)
    if braces is None or not (braces[1] or braces[2]):
        return None  # "{", "{}" or "{,}": a literal brace, as in re
    low = int(braces[1] or 0)
    high = None if braces[2] and not braces[3] else int(braces[3] or braces[1])
    if low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or high < low)):
        raise ValueError(f"bad repeat {braces[0]} (at most {MAX_REPEAT}, and m <= n)")
    return low, high, braces.end()


def _test_of(atom: str) -> _Test:
    """The test of one character against ``atom``: a plain or escaped character by
    equality, ``.`` by not being a newline, the rest compiled by ``re`` (once per
    distinct source: a filter may repeat an atom a few hundred times)."""
    if atom == ".":
        return "\n".__ne__
    if len(atom) == 1:
        return atom.__eq__
    if atom[0] == "\\" and not atom[1].isalnum():
        return atom[1].__eq__
    return _compile_atom(atom)


@functools.lru_cache(maxsize=1024)
def _compile_atom(source: str) -> _Test:
    try:
        with warnings.catch_warnings():
            # "Possible nested set" and the like: ambiguous, so refused.
            warnings.simplefilter("error")
            compiled = re.compile(source)
    except (re.error, FutureWarning, DeprecationWarning) as exc:
        raise ValueError(f"bad atom {source!r}: {exc}") from None
    return compiled.fullmatch
