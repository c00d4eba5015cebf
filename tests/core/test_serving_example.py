"""examples/serving.py runs end to end on the CPU: registry and store filled by the service's rules, a pool
filled by registry id, refusals of other structures, requests switching experts."""

from __future__ import annotations

from examples import serving


def test_serving_example_runs(tmp_path, capsys):
    assert serving.main(["--workdir", str(tmp_path), "--requests", "6"]) == 0
    out = capsys.readouterr().out
    assert "added lora-color (registry:" in out and "added lora-pair (registry:" in out
    assert "skipped ia3-next:" in out and "it is a IA3 adapter, the live one is LORA" in out
    assert "skipped lora-plus:" in out
    assert out.count("[lora-") == 6 and "/6 correct; pool: 0 hits, 6 misses" in out
    assert (tmp_path / "registry.db").is_file() and any((tmp_path / "store").iterdir())
