"""Tag patterns: re.fullmatch's answers, without its backtracking."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings, strategies as st

from somasync import tagpattern
from somasync.tagpattern import MAX_STATES, TagPattern

ATOMS = ["a", "b", "-", ".", "[ab]", "[^a]", "[]a]", r"\d", r"\w", r"\.", r"\s", "[a-c1]"]
QUANTIFIERS = ["", "", "*", "+", "?", "{2}", "{1,}", "{,2}", "{0,3}", "*?", "+?", "{,}"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    alternatives = draw(st.lists(
        st.lists(st.tuples(st.sampled_from(ATOMS), st.sampled_from(QUANTIFIERS)),
                 max_size=6),
        min_size=1, max_size=3))
    return "|".join("".join(atom + quantifier for atom, quantifier in alternative)
                    for alternative in alternatives)


@settings(max_examples=600, deadline=None)
@given(pattern=patterns(), value=st.text(alphabet="ab1-.c \n]", max_size=8))
def test_a_pattern_matches_exactly_what_re_fullmatch_matches(pattern: str, value: str) -> None:
    assert TagPattern(pattern).matches(value) == (re.fullmatch(pattern, value) is not None)


@pytest.mark.parametrize(("pattern", "value"), [
    ("sensor|ids", "ids"), (r"edge-\d{1,3}\.example", "edge-12.example"),
    (".*-prod|.*-stage", "eu-stage"), ("a{}", "a{}"), ("a{", "a{"), ("x|", ""),
    ("a{\u0663}", "a{\u0663}"),  # an Arabic-Indic three is no repeat count in re
    ("a\\.b\\\\c d-[x]", "a.b\\c d-x"),
    ("[^]a]+", "bcd"),
])
def test_the_patterns_people_write_match_as_in_re(pattern: str, value: str) -> None:
    assert TagPattern(pattern).matches(value)
    assert re.fullmatch(pattern, value) is not None


@pytest.mark.parametrize("pattern", [
    ".?" * 127 + "!",  # 93 s in re on a 5-character value
    "a*" * 100 + "b",  # n**100 steps in re
    "[a-z-]?" * 24 + "!",
    r"\w*\w*\w*\w*\w*!|a+a+a+a+!",
])
def test_pathological_patterns_cost_at_most_one_test_per_state_and_character(
        pattern: str) -> None:
    compiled = TagPattern(pattern)
    tests = 0

    def counting(test: Callable[[str], object]) -> Callable[[str], object]:
        def counted(char: str) -> object:
            nonlocal tests
            tests += 1
            return test(char)
        return counted

    for automaton in compiled._alternatives:
        automaton.tests = [counting(test) for test in automaton.tests]
    value = "a" * 200
    states = sum(len(automaton.tests) for automaton in compiled._alternatives)
    assert not compiled.matches(value)
    assert 0 < tests <= len(value) * states


@pytest.mark.parametrize(("pattern", "why"), [
    ("(a)", "groups"), ("a(?:b)", "groups"), ("^a", "anchors"), ("a$", "anchors"),
    (r"\bword", "escape"), (r"\1", "escape"), (r"a\Z", "escape"), ("a*+", "possessive"),
    ("a**", "multiple repeat"), ("*a", "nothing to repeat"), ("{2}", "nothing to repeat"),
    ("a{3,2}", "bad repeat"), ("a{0,300}", "bad repeat"), ("[ab", "unterminated"),
    ("ab\\", "backslash"), ("[[a]", "bad atom"), ("[z-a]", "bad atom"),
    (".{0,255}" * 3, "states"),
])
def test_patterns_outside_the_language_are_refused_with_the_reason(pattern: str,
                                                                   why: str) -> None:
    with pytest.raises(ValueError, match=why):
        TagPattern(pattern)


def test_the_state_bound_counts_expanded_repeats() -> None:
    TagPattern("a{0,255}b{0,255}")  # 510 states
    with pytest.raises(ValueError, match=str(MAX_STATES)):
        TagPattern("a{0,255}b{0,255}c{3}")
    assert tagpattern.MAX_REPEAT == 255
