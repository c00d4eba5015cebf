"""Operation inputs given as addresses (issue 14): `compeft similar/merge` and storage.operations.resolve_inputs
take s3://BUCKET/PREFIX/DIR and hf://ORG/REPO@REV/SUB/DIR artifact addresses, fetched by storage.serving's
resolver (a real SeaweedFS S3 server and the Hub test server); results name the address; bad addresses fail in
one line naming the input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from storage_testlib import HUB_TOKEN

from compeft.cli import main
from compeft.hashing import sha256_file
from compeft.ops import similarity
from storage import operations
from storage.publishers import open_publisher
from storage.registry import open_registry
from storage.stores import open_store
from storage.values import Provenance
from tests.ops.conftest import adapter_tensors, make_artifact


@pytest.fixture
def pair(tmp_path) -> list[Path]:
    """Two related compressed adapters (cosine well above 0)."""
    return [make_artifact(tmp_path, "a", adapter_tensors(1)),
            make_artifact(tmp_path, "b", adapter_tensors(2, shared=1, mix=0.3))]


def upload(s3_client, bucket: str, prefix: str, artifact: Path) -> str:
    for name in ("compeft.safetensors", "adapter_config.json"):
        s3_client.upload_file(str(artifact / name), bucket, f"{prefix}/{name}")
    return f"s3://{bucket}/{prefix}"


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_similar_and_merge_take_s3_addresses(pair, bucket, s3_client, tmp_path, capsys):
    address = upload(s3_client, bucket, "team/experts/b", pair[1])  # PREFIX/SUB/DIR
    [expected] = similarity(pair, device="cpu")
    [got] = run_json(capsys, ["similar", str(pair[0]), address, "--device", "cpu", "--json"])["pairs"]
    assert got == {**expected.to_dict(), "b": address}
    out = run_json(capsys, ["merge", address, str(pair[0]), "--method", "ties", "--out", str(tmp_path / "m"),
                            "--to", "compeft", "--device", "cpu", "--json"])
    local = run_json(capsys, ["merge", str(pair[1]), str(pair[0]), "--method", "ties", "--out", str(tmp_path / "l"),
                              "--to", "compeft", "--device", "cpu", "--json"])
    assert [i["path"] for i in out["inputs"]] == [address, str(pair[0])]
    assert [i["sha256"] for i in out["inputs"]] == [i["sha256"] for i in local["inputs"]]
    assert (tmp_path / "m" / "compeft.safetensors").read_bytes() != b""
    assert similarity([tmp_path / "m", tmp_path / "l"], device="cpu")[0].cosine == pytest.approx(1.0)


def test_similar_takes_hub_addresses_pinned_and_below_a_folder(pair, hub, monkeypatch, fast_retry, capsys):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    publisher = open_publisher("hf://acme", hf_endpoint=hub.endpoint, retry_policy=fast_retry)
    uris = []
    for path, folder in zip(pair, ("", "experts/b")):
        provenance = Provenance(source_uri="hf://bob/lora", source_name="lora", source_revision="a" * 40,
                                options={}, package_version="0.1.0",
                                artifact_sha256=sha256_file(path / "compeft.safetensors"), subfolder=folder)
        uris.append(publisher.publish(path, provenance).uri)
    assert "@" in uris[1] and uris[1].endswith("/experts/b")  # hf://ORG/REPO@REV/SUB/DIR
    [expected] = similarity(pair, device="cpu")
    [got] = run_json(capsys, ["similar", uris[0], uris[1], "--device", "cpu", "--json"])["pairs"]
    assert got == {**expected.to_dict(), "a": uris[0], "b": uris[1]}


@pytest.mark.parametrize(("address", "says"), [
    ("s3://", "invalid address"),
    ("gs://bucket/x", "unknown scheme"),
    ("hf://acme", "not one artifact"),
])
def test_bad_addresses_fail_in_one_line_naming_the_input(pair, address, says, capsys):
    assert main(["similar", str(pair[0]), address, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and address in err and says in err


def test_a_missing_s3_artifact_fails_naming_the_input(pair, bucket, capsys):
    address = f"s3://{bucket}/nothing/here"
    assert main(["similar", str(pair[0]), address, "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and address in err


def test_flow_inputs_resolve_s3_addresses_and_link_registered_rows(pair, bucket, s3_client, tmp_path, sqlite_url):
    address = upload(s3_client, bucket, "pub/a", pair[0])
    registry = open_registry(sqlite_url)
    store = open_store(tmp_path / "store")
    resolved = operations.resolve_inputs(registry, store, [address, str(pair[1])], tmp_path / "work")
    assert [r.address for r in resolved] == [address, str(pair[1])]
    assert sha256_file(resolved[0].path / "compeft.safetensors") == sha256_file(pair[0] / "compeft.safetensors")
    assert resolved[0].path.is_relative_to(tmp_path / "work") and resolved[1].path == pair[1]
    with pytest.raises(Exception, match="hf://acme"):
        operations.resolve_inputs(registry, store, ["hf://acme"], tmp_path / "work")
    registry.close()


def test_an_unreachable_hub_is_an_error_of_one_line_not_an_internal_one():
    from huggingface_hub.errors import LocalEntryNotFoundError

    from storage.errors import SourceError
    from storage.hub import _translate

    def offline():
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub\nPlease check")

    with pytest.raises(SourceError, match=r"^hf://acme/x@main/compeft.safetensors: cannot reach the Hub \(\w+\)$"):
        _translate("hf://acme/x@main/compeft.safetensors", offline, SourceError)
