"""``python -m somasync.bench amplification``, run small: every request kind is measured,
and every kind that should make the node answer did."""

from __future__ import annotations

import json
from typing import Any

import pytest

from somasync.bench.__main__ import main
from somasync.bench.amplification import DATAGRAM_KINDS, LINK_KINDS
from somasync.core.budget import AMPLIFICATION_LIMIT

LINKED = {kind.name for kind in LINK_KINDS if kind.setup == "linked"}
SMALL = ["--messages", "40", "--members", "6", "--neighbours", "2", "--window", "1",
         "--settle", "0.5", "--rate", "20"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("amplification") / "a.json"
    assert main(["amplification", *SMALL, "--json", str(path)]) == 0
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_the_table_names_the_worst_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["amplification", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "DIGEST, empty" in out
    assert "worst single factor:" in out
    assert "worst sustained factor:" in out


def test_every_kind_is_measured_with_the_seal_on_and_off(report: dict[str, Any]) -> None:
    expected = {(kind.name, "records") for kind in LINK_KINDS}
    expected |= {(kind.name, seal) for kind in DATAGRAM_KINDS for seal in ("on", "off")
                 if not (kind.sealed_only and seal == "off")
                 and not (kind.unsealed_only and seal == "on")}
    rows = report["kinds"]
    assert {(row["kind"], row["seal"]) for row in rows} == expected
    assert len(rows) == len(expected)
    assert {"machine", "settings", "state", "baseline_bytes", "worst", "seconds"} <= set(report)


def test_each_kind_got_the_answer_it_should(report: dict[str, Any]) -> None:
    rows = {(row["kind"], row["seal"]): row for row in report["kinds"]}
    # A link request is made on a connection opened for it: what the node answers to the
    # connection alone (its handshake and link-up digest) is the floor of every answer.
    connection = rows[("handshake E+AUTH", "records")]["single"]["answer_bytes"]
    for row in report["kinds"]:
        name = f"{row['kind']} (seal {row['seal']})"
        for part in ("single", "sustained"):
            figures = row[part]
            assert figures["requests"] >= 1, name
            assert figures["request_bytes"] > 0, name
            assert figures["factor"] == pytest.approx(
                figures["answer_bytes"] / figures["request_bytes"]), name
            floor = connection if row["part"] == "link" and row["kind"] in LINKED else 0
            if row["expect_answer"]:
                assert figures["answer_bytes"] > floor, f"{name}: no answer ({part})"
            else:
                assert figures["answer_bytes"] == floor, f"{name}: answered ({part})"
        assert row["single"]["requests"] == 1, name
        assert row["sustained"]["requests"] > 1 or row["sustained"]["rate_per_s"] <= 1, name


def test_no_request_gets_more_than_the_amplification_limit(report: dict[str, Any]) -> None:
    """The filed figures: an empty DIGEST x106,000 (x14,373 with the bucket), a GRAFT
    x17.6, a PUSH x21.6 sealed and x60.6 unsealed."""
    for row in report["kinds"]:
        for part in ("single", "sustained"):
            assert row[part]["factor"] <= AMPLIFICATION_LIMIT, (row["kind"], row["seal"], part)


def test_an_empty_digest_gets_part_of_the_store_and_meets_the_bucket(
        report: dict[str, Any]) -> None:
    rows = {(row["kind"], row["seal"]): row for row in report["kinds"]}
    state = report["state"]
    digest = rows[("DIGEST, empty", "records")]
    assert state["stored_messages"] == 40
    # Repairs, as far as the link's credit goes: more than the connection alone gets.
    connection = rows[("handshake E+AUTH", "records")]["single"]["answer_bytes"]
    assert digest["single"]["answer_bytes"] >= connection + state["stored_frame_bytes"]
    # 20 requests in one second against a bucket of 8 (+2 a second): most are refused.
    assert digest["sustained"]["refused"] > 0
    assert digest["sustained"]["factor"] < digest["single"]["factor"]
    # A new link starts with a full bucket.
    assert rows[("reconnect + 8 DIGESTs", "records")]["sustained"]["refused"] == 0
    # One copy per id, however often a GRAFT names it.
    repeated = rows[("GRAFT, 1 id x100", "records")]["single"]
    many = rows[("GRAFT, 100 stored ids", "records")]["single"]
    assert repeated["answer_bytes"] < many["answer_bytes"] / 10


def test_the_worst_kind_is_the_largest_factor(report: dict[str, Any]) -> None:
    rows = report["kinds"]
    worst = report["worst"]
    assert worst["single"]["factor"] == max(row["single"]["factor"] for row in rows)
    assert worst["sustained"]["factor"] == max(row["sustained"]["factor"] for row in rows)


@pytest.mark.parametrize("args", [["--rate", "0"], ["--members", "3"], ["--window", "0"]])
def test_bad_settings_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["amplification", *args])
    assert caught.value.code == 2
