"""Address grammar and name validation (no traversal, no pickles, no credentials in addresses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.addresses import (
    HubAuthorAddress,
    HubQueryAddress,
    HubRepoAddress,
    LocalAddress,
    S3Address,
    parse_address,
)
from storage.errors import AddressError, ValidationError
from storage.validation import (
    validate_file_name,
    validate_key,
    validate_relative_path,
    validate_repo_id,
)


def test_local_paths(tmp_path):
    assert parse_address(str(tmp_path)) == LocalAddress(tmp_path)
    assert parse_address(f"file://{tmp_path}") == LocalAddress(tmp_path)
    assert parse_address("~/x") == LocalAddress(Path("~/x").expanduser())


def test_s3_addresses_and_endpoint_precedence(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert parse_address("s3://my-bucket/a/b/") == S3Address("my-bucket", "a/b", "http://127.0.0.1:9000")
    assert parse_address("s3://my-bucket", s3_endpoint="http://h:1") == S3Address("my-bucket", "", "http://h:1")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert parse_address("s3://my-bucket/p").endpoint_url is None
    assert str(parse_address("s3://my-bucket/p/q")) == "s3://my-bucket/p/q"


def test_hub_addresses(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:5555/")
    assert parse_address("hf://acme") == HubAuthorAddress("acme", "http://127.0.0.1:5555")
    repo = parse_address("hf://acme/lora-x@v1.0")
    assert repo == HubRepoAddress("acme/lora-x", "v1.0", "http://127.0.0.1:5555") and repo.name == "lora-x"
    assert parse_address("hf://acme/lora-x", hf_endpoint="http://other:1").endpoint == "http://other:1"
    query = parse_address("hf://?search=llama&author=acme&filter=peft&base_model=meta/llama&limit=7")
    assert query == HubQueryAddress("llama", "acme", "peft", "meta/llama", 7, "http://127.0.0.1:5555")
    assert parse_address(str(query)) == query  # round trip
    monkeypatch.delenv("HF_ENDPOINT")
    assert parse_address("hf://acme").endpoint == "https://huggingface.co"


def test_hub_addresses_below_a_folder(monkeypatch):
    """hf://ORG/REPO[@REV][/SUB/DIR]: the revision is one segment (a '/' in it percent-encoded), the rest a folder."""
    monkeypatch.setenv("HF_ENDPOINT", "http://h:1")
    sha = "a" * 40
    assert parse_address(f"hf://acme/multi@{sha}/task_a/v2") == HubRepoAddress("acme/multi", sha, "http://h:1", "task_a/v2")
    assert parse_address("hf://acme/multi/task_a") == HubRepoAddress("acme/multi", None, "http://h:1", "task_a")
    pr = parse_address("hf://acme/multi@refs%2Fpr%2F3/sub")
    assert (pr.revision, pr.subfolder) == ("refs/pr/3", "sub")
    for address in (pr, parse_address(f"hf://acme/multi@{sha}/task_a/v2"), parse_address("hf://acme/multi/x")):
        assert parse_address(str(address)) == address  # str() is the grammar's own spelling
    assert str(pr) == "hf://acme/multi@refs%2Fpr%2F3/sub"


@pytest.mark.parametrize("text, message", [
    ("", "empty address"),
    ("ftp://x/y", "unknown scheme"),
    ("s3://B/x", "bucket"),
    ("s3://ab", "bucket"),
    ("s3://bucket/../etc", "'..'"),
    ("s3://bucket/a//b", "empty"),
    ("s3://key:secret@bucket/x", "credentials"),
    ("hf://", "expected hf://AUTHOR"),
    ("hf://a/b/c@main", "revision goes right after the repo"),
    ("hf://a/b@main/../x", "invalid subfolder"),
    ("hf://a/b/x/./y", "invalid subfolder"),
    ("hf://a/b@/x", "empty revision"),
    ("hf://acme/..", "unsafe"),
    ("hf://acme/x@../../main", "revision"),
    ("hf://acme@main", "needs a repo"),
    ("hf://user:token@acme/x", "credentials"),
    ("hf://?limit=0", "positive integer"),
    ("hf://?limit=x", "positive integer"),
    ("hf://?token=abc", "unknown query key"),
    ("hf://?search=a&search=b", "twice"),
    ("hf://acme?search=x", "query is written"),
])
def test_invalid_addresses(text, message):
    with pytest.raises(AddressError, match=message):
        parse_address(text)


def test_endpoint_must_be_http_without_credentials():
    with pytest.raises(AddressError, match="credentials"):
        parse_address("hf://acme", hf_endpoint="http://user:tok@127.0.0.1:1")
    with pytest.raises(AddressError, match="http"):
        parse_address("s3://bucket", s3_endpoint="file:///tmp")


@pytest.mark.parametrize("name", ["adapter_model.bin", "x.pt", "m.PKL", "w.ckpt", "a.pth", "../x", "a/b", ".", "", "a\x00b"])
def test_unsafe_file_names(name):
    with pytest.raises(ValidationError):
        validate_file_name(name)


def test_safe_names():
    assert validate_file_name("adapter_model.safetensors") == "adapter_model.safetensors"
    assert validate_repo_id("acme/lora-x.v2") == "acme/lora-x.v2"
    assert validate_key("a/b/c.json") == "a/b/c.json"
    assert validate_relative_path("sub/adapter_config.json").parts == ("sub", "adapter_config.json")


@given(st.lists(st.sampled_from(["..", ".", "a", "b", "", "x.json", "/"]), min_size=1, max_size=6))
def test_validated_keys_never_escape(parts):
    key = "/".join(parts)
    try:
        validate_key(key)
    except ValidationError:
        return
    resolved = (Path("/root/base") / key).resolve()
    assert Path("/root/base") in resolved.parents
