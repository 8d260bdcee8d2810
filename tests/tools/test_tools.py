"""The developer tools in ``tools/``: each runs, and does what its docstring says."""

from __future__ import annotations

import importlib.util
import mmap
import os
import secrets
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from somasync.core import wire

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wire_reference_decodes_every_example_it_prints(
        capsys: pytest.CaptureFixture[str]) -> None:
    reference = load("wire_reference")
    assert reference.main([]) == 0
    out = capsys.readouterr().out
    for kind in wire.FrameKind:
        if kind != wire.FrameKind.HELLO:  # retired: the handshake introduces a peer
            assert f"({kind.name})" in out
    for _title, frame in reference.examples():
        assert reference.main(["--decode", frame.hex()]) == 0
    assert "source 'node-a'" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["zz", "00000005 01", "00000005 0201000000"],
                         ids=["not-hex", "short", "bad-version"])
def test_wire_reference_refuses_what_the_codec_refuses(
        text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert load("wire_reference").main(["--decode", text]) == 1
    assert "not a frame" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/dev/shm").is_dir() or not Path("/proc/self/maps").exists(),
                    reason="needs /dev/shm and /proc")
def test_shm_gc_removes_only_segments_nobody_maps() -> None:
    tag = f"gctest{secrets.token_hex(3)}"
    path = Path("/dev/shm") / f"somasync-{tag}-0001"
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 4096)
        mapping = mmap.mmap(fd, 4096)
        command = [sys.executable, str(TOOLS / "shm_gc.py"), "--tag", tag, "--remove"]
        while_mapped = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                      check=True).stdout
        assert f"in use by pid {os.getpid()}" in while_mapped
        assert path.exists()
        mapping.close()
        os.close(fd)
        fd = -1
        after = subprocess.run(command, capture_output=True, text=True, timeout=60,
                               check=True).stdout
        assert "1 leaked, 1 removed" in after
        assert not path.exists()
    finally:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)


def test_the_fuzzer_runs_every_target_and_nothing_escapes(
        capsys: pytest.CaptureFixture[str]) -> None:
    fuzz = load("fuzz")
    assert fuzz.main(["--frames", "1500", "--datagrams", "1500", "--handshakes", "1500",
                      "--records", "1500", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "0 escaped" in out
    for target in ("frame", "datagram", "handshake", "record"):
        assert f"{target}: 1,500 inputs" in out


def test_the_fuzzers_mutations_change_their_input() -> None:
    import random

    fuzz = load("fuzz")
    rng = random.Random(1)
    valid = bytes(range(64))
    mutated = [fuzz.mutate(rng, valid, b"other") for _ in range(200)]
    assert sum(m != valid for m in mutated) >= 190
