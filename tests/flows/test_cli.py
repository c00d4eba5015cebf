"""compeft catalog: usage errors are one line with exit code 2 before Prefect starts; a run prints the table."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from compeft.cli import main


@pytest.mark.parametrize("argv, message", [
    (["catalog"], "required: source"),
    (["catalog", "ftp://x/y"], "unknown scheme"),
    (["catalog", "/tmp/x", "--density", "2"], "--density"),
    (["catalog", "/tmp/x", "--alpha", "2", "--task", "t.yaml"], "exclude each other"),
    (["catalog", "/tmp/x", "--codec", "nope"], "codec"),
    (["catalog", "/tmp/x", "--publish-to", "s3://"], "invalid"),
    (["catalog", "/tmp/x", "--batch-size", "0"], "batch-size"),
])
def test_usage_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_per_adapter_tasks_are_parsed():
    from flows.cli import build_params, build_parser

    params = build_params(build_parser().parse_args(
        ["/tmp/x", "--task", "lora-a=tasks/a.yaml", "--task", "lora-b=hellaswag", "--task", "multi/task_a=boolq",
         "--alpha", "2"]))
    options = params["options"]
    assert options.tasks == {"lora-a": "tasks/a.yaml", "lora-b": "hellaswag", "multi/task_a": "boolq"}
    assert options.task is None
    assert options.task_for("lora-a") == "tasks/a.yaml" and options.task_for("other") is None
    assert options.config_for("lora-a").key() != options.config_for("other").key()


@pytest.mark.usefixtures("prefect_api")
def test_catalog_command_prints_the_registry_table(tmp_path):
    # stdout only: capsys would also swap sys.stderr, which Prefect's log handler may bind to and
    # keep after this test closes it
    from tests.flows.catalogs import make_catalog

    src = make_catalog(tmp_path / "cat", n=2, broken=False)
    argv = ["catalog", str(src), "--database-url", f"sqlite:///{tmp_path / 'r.db'}", "--store", str(tmp_path / "s"),
            "--publish-to", str(tmp_path / "pub"), "--density", "0.2"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    assert "bytes before → after" in out.getvalue() and "lora-0" in out.getvalue() and "lora-1" in out.getvalue()
    assert "2 compressed" in out.getvalue()
    assert (tmp_path / "pub" / "lora-0" / "compeft.safetensors").is_file()
    assert "COMPEFT_DATABASE_URL" not in os.environ or os.environ["COMPEFT_DATABASE_URL"] != argv[3]
    again = io.StringIO()
    with contextlib.redirect_stdout(again):
        assert main(argv) == 0
    assert "2 existing" in again.getvalue()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_publishing_onto_the_catalog_is_refused_before_anything_runs(tmp_path, capsys, where):
    """Issue 15 item 1: ``catalog CAT --publish-to CAT`` (or a folder inside or around it) is one exit-2 line, and
    every source adapter is left byte for byte."""
    from tests.flows.catalogs import make_catalog

    src = make_catalog(tmp_path / "cat", n=2, broken=False)
    before = {p: p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}
    dest = {"same": src, "inside": src / "published", "around": tmp_path}[where]
    argv = ["catalog", str(src), "--database-url", f"sqlite:///{tmp_path / 'r.db'}", "--store", str(tmp_path / "store"),
            "--publish-to", str(dest)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "publish destination" in err and str(src) in err
    assert {p: p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()} == before
    assert not (tmp_path / "r.db").exists()


@pytest.mark.usefixtures("prefect_api")
def test_failed_adapters_and_failed_runs_print_no_tracebacks(tmp_path, capfd):
    """Issue 15 item 8: a catalog run with a failed adapter, and a run whose source is missing, end with one error
    line each and no traceback (per-task lines are quiet; expected errors are logged without their traceback)."""
    from tests.flows.catalogs import make_catalog

    src = make_catalog(tmp_path / "cat", n=1, broken=True)
    common = ["--database-url", f"sqlite:///{tmp_path / 'r.db'}", "--store", str(tmp_path / "s"), "--density", "0.2"]
    for source, code, message in ((src, 1, "1 adapter(s) failed: lora-broken"), (tmp_path / "missing", 2, "does not exist")):
        capfd.readouterr()
        assert main(["catalog", str(source), *common]) == code
        err = capfd.readouterr().err
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith("compeft: error: ") and message in err.strip().splitlines()[-1]
