"""Key, allowlist, certificate and revocation files (somasync/keys.py) and the
``somasync keys`` command."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from somasync import Identity, KeyFileError
from somasync.cli import main as cli
from somasync.core.payload import MessageType
from somasync.core.trust import Certificate, parse_revocation
from somasync.keys import (
    load_allowlist,
    load_certificate,
    load_identity,
    load_revocation,
    revocation_message,
    save_certificate,
    save_identity,
    save_revocation,
)

KEY = Identity(bytes([4]) * 32)


def test_an_identity_file_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    save_identity(KEY, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path).public_key == KEY.public_key
    with pytest.raises(KeyFileError, match="exists already"):
        save_identity(Identity.generate(), path)
    assert load_identity(path).public_key == KEY.public_key  # not overwritten


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_an_identity_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    save_identity(KEY, path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as caught:
        load_identity(path)
    assert caught.value.path == str(path)


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b'{"type": "somasync-certificate"}', "not a somasync-identity file"),
    (b'{"type": "somasync-identity", "seed": "abcd"}', "32 bytes of hex"),
    (b'{"type": "somasync-identity", "seed": "zz"}', "32 bytes of hex"),
    (json.dumps({"type": "somasync-identity", "seed": "04" * 32,
                 "public_key": "00" * 32}).encode(), "does not belong"),
])
def test_a_bad_identity_file_is_refused_naming_the_file(tmp_path: Path, content: bytes,
                                                        reason: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=reason):
        load_identity(path)


def test_a_missing_identity_file_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"missing\.key"):
        load_identity(tmp_path / "missing.key")


def test_allowlist_files(tmp_path: Path) -> None:
    path = tmp_path / "allow"
    path.write_text(f"# the edge\nedge-1 {'11' * 32}\n\nedge-2 {'22' * 32}  # second\n")
    assert load_allowlist(path) == {"edge-1": bytes([0x11]) * 32, "edge-2": bytes([0x22]) * 32}
    for bad, reason in ((f"edge-1 {'11' * 31}\n", "line 1"), ("edge-1\n", "line 1"),
                        (f"a {'11' * 32}\na {'22' * 32}\n", "twice"), ("# none\n", "no node")):
        path.write_text(bad)
        with pytest.raises(KeyFileError, match=reason):
            load_allowlist(path)


def test_certificate_and_revocation_files_round_trip(tmp_path: Path) -> None:
    operator = Identity(bytes([8]) * 32)
    certificate = Certificate.issue(operator, "edge-1", KEY.public_key, not_before=1,
                                    not_after=2)
    save_certificate(certificate, tmp_path / "edge.cert")
    assert load_certificate(tmp_path / "edge.cert") == certificate
    notice = revocation_message(operator, KEY.public_key, sequence=3)
    save_revocation(notice, tmp_path / "revoke.json")
    loaded = load_revocation(tmp_path / "revoke.json")
    assert loaded.id == notice.id
    assert loaded.signer_public_key == operator.public_key
    assert isinstance(loaded.message_type, MessageType.Binary)
    assert parse_revocation(loaded.message_type.data) == KEY.public_key


def test_a_tampered_revocation_file_is_refused(tmp_path: Path) -> None:
    operator = Identity(bytes([8]) * 32)
    save_revocation(revocation_message(operator, KEY.public_key, sequence=1),
                    tmp_path / "revoke.json")
    data = json.loads((tmp_path / "revoke.json").read_text())
    raw = bytearray(bytes.fromhex(data["message"]))
    raw[-5] ^= 0x01
    data["message"] = raw.hex()
    (tmp_path / "revoke.json").write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match=r"no signed revocation|no valid message"):
        load_revocation(tmp_path / "revoke.json")


def test_the_keys_command_sets_up_a_certificate_mesh(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.chdir(tmp_path)
    assert cli(["keys", "generate", "--out", "operator.key"]) == 0
    assert cli(["keys", "generate", "--out", "edge.key", "--format", "json"]) == 0
    out = capsys.readouterr().out.splitlines()
    edge_key = json.loads(out[-1])["public_key"]
    assert cli(["keys", "show", "edge.key"]) == 0
    assert capsys.readouterr().out.strip() == edge_key
    assert cli(["keys", "certify", "--operator", "operator.key", "--name", "edge-1",
                "--key-of", "edge.key", "--days", "30", "--out", "edge.cert"]) == 0
    assert cli(["keys", "show", "edge.cert", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert shown["name"] == "edge-1"
    assert shown["public_key"] == edge_key
    assert shown["signature_ok"] is True
    assert shown["not_after"] - shown["not_before"] == 30 * 86400
    assert cli(["keys", "revoke", "--operator", "operator.key", "--public-key", edge_key,
                "--sequence", "1", "--out", "revoke.json"]) == 0
    assert cli(["keys", "show", "revoke.json", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["revokes"] == edge_key


def test_the_keys_command_refuses_bad_files_with_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.chdir(tmp_path)
    assert cli(["keys", "generate", "--out", "operator.key"]) == 0
    Path("operator.key").chmod(0o644)
    assert cli(["keys", "certify", "--operator", "operator.key", "--name", "n",
                "--public-key", "11" * 32, "--out", "n.cert"]) == 1
    assert "chmod 600" in capsys.readouterr().err
    assert not Path("n.cert").exists()
    with pytest.raises(SystemExit) as usage:
        cli(["keys", "revoke", "--operator", "operator.key", "--public-key", "abc",
             "--sequence", "1", "--out", "r.json"])
    assert usage.value.code == 2
