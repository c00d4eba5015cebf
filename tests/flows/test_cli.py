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
