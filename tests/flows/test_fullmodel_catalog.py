"""Catalogs holding full fine-tunes (issue 17): each is compressed against the base its card, its config or the
user's base_for mapping names, registered as a full residual and published; one with no base is a recorded skip.
Local tree and Hub test server."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import compeft
from bench.fullpair import ModelShape, write_pair

pytestmark = pytest.mark.usefixtures("prefect_api")
SHAPE = ModelShape("t", 64, 128, 2, 256)


def fine_tunes(root: Path) -> tuple[Path, dict[str, Path]]:
    """A base directory and four fine-tunes of it: base named by config, by card, by nobody (x2)."""
    ft, base = write_pair(SHAPE, root / "pair", shard_bytes=40_000)
    dirs = {}
    for name in ("ft-config", "ft-card", "ft-mapped", "ft-orphan"):
        dirs[name] = root / "catalog" / name
        shutil.copytree(ft, dirs[name])
    for name in ("ft-card", "ft-mapped", "ft-orphan"):
        config = (dirs[name] / "config.json").read_text().replace(f'"_name_or_path": "{base}"', '"_name_or_path": ""')
        (dirs[name] / "config.json").write_text(config)
    (dirs["ft-card"] / "README.md").write_text(f"---\nlicense: mit\nbase_model:\n- {base}\n---\n# a fine-tune\n")
    return base, dirs


def check(result: dict, service, base: Path, names: dict[str, str]) -> None:
    by_name = {o["name"]: o for o in result["outcomes"]}
    reg = service.config().registry()
    for name, status in names.items():
        assert by_name[name]["status"] == status, by_name[name]
    for name in (n for n, s in names.items() if s == "compressed"):
        o = by_name[name]
        detail = reg.get_artifact(o["artifact_id"])
        assert detail.adapter.peft_type == "FULL" and o["ratio"] > 4
        info = compeft.inspect(o["published_uri"])
        assert info.kind == "full" and info.source["peft_type"] == "FULL"
        model = compeft.decompress(o["published_uri"], Path(o["published_uri"]).parent / f"{name}-model", base=base)
        assert (model / "config.json").is_file()
    orphan = next(o for o in result["outcomes"] if o["status"] == "skipped" and o["name"].endswith("orphan"))
    assert "base" in orphan["reason"] and "base_for" in orphan["reason"]


def test_local_catalog_compresses_full_fine_tunes_against_their_bases(tmp_path, service):
    from flows.catalog import compress_catalog
    from flows.params import CompressionOptions

    base, dirs = fine_tunes(tmp_path)
    options = CompressionOptions(base_for={"ft-mapped": str(base)})
    result = compress_catalog(str(tmp_path / "catalog"), options=options, service=service)
    check(result, service, base, {"ft-config": "compressed", "ft-card": "compressed", "ft-mapped": "compressed",
                                  "ft-orphan": "skipped"})
    again = compress_catalog(str(tmp_path / "catalog"), options=options, service=service)
    assert again["counts"] == {"compressed": 0, "existing": 3, "skipped": 1, "failed": 0}


def test_hub_catalog_compresses_full_fine_tunes(tmp_path, service):
    from flows.catalog import compress_catalog
    from flows.params import CompressionOptions, ServiceParameters

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from hubserver import HubServer
    finally:
        sys.path.pop(0)
    base, dirs = fine_tunes(tmp_path)
    server = HubServer().start()
    try:
        for name in ("ft-card", "ft-mapped", "ft-orphan"):
            server.state.add_repo(f"bob/{name}", {p.name: p.read_bytes() for p in dirs[name].iterdir()})
        hub_service = ServiceParameters(**{**service.model_dump(), "hf_endpoint": server.endpoint})
        options = CompressionOptions(base_for={"ft-mapped": str(base)})
        result = compress_catalog("hf://bob", options=options, service=hub_service)
    finally:
        server.stop()
    check(result, hub_service, base, {"ft-card": "compressed", "ft-mapped": "compressed", "ft-orphan": "skipped"})
