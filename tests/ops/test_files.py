"""compeft.ops.files.open_many: the planes and the first error of open_planes, artifact by artifact; checksums
hashed in workers, and a file verified once not hashed again until it changes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

import compeft.ops.files as files
from compeft.container import FILENAME
from compeft.errors import ChecksumError, CodecError, CompeftError, ContainerError
from compeft.ops.files import forget_verified, open_many, planes_of
from compeft.ops.planes import open_planes
from compeft.safetensors_header import read_header

SPECS = ({"seed": 1}, {"seed": 2, "shared": 1, "mix": 0.2, "codec": "bitmask"}, {"seed": 3, "density": 0.9})


def same_planes(a, b) -> bool:
    return (torch.equal(a.support.cpu(), b.support.cpu()) and torch.equal(a.negative.cpu(), b.negative.cpu())
            and (a.d, a.kept, a.scale, a.label, a.kind, a.layout, a.directory) == (b.d, b.kept, b.scale, b.label, b.kind,
                                                                                 b.layout, b.directory)
            and a.carried.keys() == b.carried.keys() and dict(a.source) == dict(b.source))


def payload_offset(path: Path) -> tuple[int, int]:
    """(start, end) of the payload's bytes in the container file."""
    header, start, _ = read_header(path / FILENAME)
    a, b = header["payload"]["data_offsets"]
    return start + a, start + b


def patch(path: Path, offset: int, value: int) -> None:
    with open(path / FILENAME, "r+b") as f:
        f.seek(offset)
        f.write(bytes([value]))


def outcome(fn, *args, **kwargs):
    """What fn returns, or the type and message of what it raised."""
    try:
        return fn(*args, **kwargs)
    except CompeftError as err:
        return type(err), str(err)


def same_error(got, expected: tuple, device: str) -> bool:
    """The same error as open_planes on the CPU: type and message; on a GPU the type and the file (the device
    decoder words its codec errors its own way)."""
    if not isinstance(got, tuple) or got[0] is not expected[0]:
        return False
    return got == expected if device == "cpu" else expected[1].split(":")[0] in got[1]


def corruptions(path: Path):
    """(offset, byte) edits of the payload that its codec checks catch or not: the table, the end, the middle."""
    start, end = payload_offset(path)
    return [(start + 9, 0xFF), (end - 1, 0xFF), ((start + end) // 2, 0x5A)]


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices())
def test_open_many_equals_open_planes(artifacts, device):
    paths = artifacts(*SPECS)
    for got, path in zip(open_many(paths + [paths[0] / FILENAME], device), paths + [paths[0]]):
        assert got.device.type == device
        assert same_planes(got, open_planes(path, "cpu"))
    mixed = planes_of([open_planes(paths[1], "cpu"), paths[0]], device)
    assert same_planes(mixed[0], open_planes(paths[1], "cpu")) and same_planes(mixed[1], open_planes(paths[0], "cpu"))
    assert open_many([], device) == []


@pytest.mark.parametrize("device", devices())
def test_errors_are_open_planes_errors_in_input_order(artifacts, device):
    paths = artifacts(*SPECS[:2])
    forget_verified()
    seen = set()
    for path in paths:
        for offset, value in corruptions(path):
            original = (path / FILENAME).read_bytes()
            patch(path, offset, value)
            for verify in (True, False):
                expected = outcome(open_planes, path, "cpu", verify=verify)
                got = outcome(open_many, [path], device, verify=verify)
                seen.add(expected[0] if isinstance(expected, tuple) else None)
                if isinstance(expected, tuple):
                    assert same_error(got, expected, device), (offset, verify)
                else:
                    assert same_planes(got[0], expected)
            assert outcome(open_many, [path], device)[0] is ChecksumError
            (path / FILENAME).write_bytes(original)
    assert {ChecksumError, CodecError, None} <= seen  # caught by the checksums, by the codec, by neither
    # two bad inputs: the first one's error, whatever the second's
    patch(paths[1], payload_offset(paths[1])[0] + 9, 0xFF)
    os.remove(paths[0] / FILENAME)
    with pytest.raises(ContainerError, match="art0.*missing"):
        open_many(paths, device)
    with pytest.raises(ChecksumError, match="art1.*payload"):
        open_many([paths[1], paths[0]], device)
    expected = outcome(open_planes, paths[1], "cpu", verify=False)
    assert "art1" in expected[1] and same_error(outcome(open_many, [paths[1], paths[0]], device, verify=False), expected,
                                                device)


def test_a_verified_file_is_hashed_again_only_once_changed(artifacts, monkeypatch):
    [path] = artifacts(SPECS[0])
    forget_verified()
    calls = []
    real = files.image_digests
    monkeypatch.setattr(files, "image_digests", lambda image, p: calls.append(p) or real(image, p))
    open_many([path])
    open_many([path])
    open_many([path], verify=False)
    assert len(calls) == 1
    original = (path / FILENAME).read_bytes()
    start, end = payload_offset(path)
    patch(path, (start + end) // 2, original[(start + end) // 2] ^ 0x10)  # a change its codec may not notice
    with pytest.raises(ChecksumError, match="payload"):
        open_many([path])
    assert len(calls) == 2
    (path / FILENAME).write_bytes(original)
    open_many([path])
    assert len(calls) == 3
    forget_verified()
    open_many([path])
    assert len(calls) == 4


def test_reads_in_pieces_give_the_same_bytes(artifacts, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import compeft.container as container
    from compeft.container import read_bytes, read_file

    [path] = artifacts(SPECS[2])
    whole = read_bytes(path / FILENAME)
    monkeypatch.setattr(container, "READ_PIECE", 1000)
    with ThreadPoolExecutor(3) as pool:
        image, identity = read_file(path / FILENAME, executor=pool)
    assert torch.equal(image, whole) and identity == container.file_identity(os.stat(path / FILENAME))
    assert same_planes(open_many([path])[0], open_planes(path))


def test_a_forked_child_opens_files_with_pools_of_its_own(artifacts):
    [path] = artifacts(SPECS[0])
    open_many([path])  # the parent's pools exist
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when open_many works, within 60 s (a pool without threads hangs)
        ok = False
        signal.alarm(60)
        try:
            ok = same_planes(open_many([path], verify=False)[0], open_planes(path))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
