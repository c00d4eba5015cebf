"""The ``compeft`` command: a thin layer over compeft.api; other commands are delegated lazily.

Exit codes: 0 ok, 2 bad usage or bad input, 1 internal error. Errors are one line on stderr;
``--debug`` (anywhere on the line) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from compeft.cliargs import Parser, add_config_arguments, config_from_args
from compeft.config import ComposeConfig, CompressionConfig, MergeConfig, SimilarityConfig
from compeft.errors import CompeftError

# command -> (module, function): loaded only when used, so `compeft compress` never imports
# Prefect, SQLAlchemy or lm-eval.
DELEGATED: dict[str, tuple[str, str]] = {
    "calibrate": ("compeft.calibrate.cli", "calibrate_main"),
    "registry": ("storage.cli", "registry_main"),
    "db": ("storage.cli", "db_main"),
    "catalog": ("flows.cli", "catalog_main"),
}
INPUTS_HELP = ("artifact directories or addresses (s3://BUCKET/PREFIX/DIR, hf://ORG/REPO[@REV][/SUB/DIR]; endpoints "
               "and credentials from the environment), one record layout")


def build_parser() -> Parser:
    parser = Parser(prog="compeft", description="ComPEFT compression of PEFT adapters and fine-tune residuals.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("compress", help="compress an adapter (or, with --base, a full fine-tune)")
    p.add_argument("src", help="adapter directory (peft, or diffusers pytorch_lora_weights.safetensors), a lone LoRA .safetensors file, "
                               "or, with --base, a fine-tuned model directory")
    p.add_argument("dst", help="new artifact directory")
    p.set_defaults(config_fields=add_config_arguments(p, CompressionConfig))
    p.add_argument("--base", default=None, metavar="BASE_DIR", help="base model directory: compress a full fine-tune residual")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("decompress", help="write a PEFT adapter (or, with --base, a full model) from an artifact")
    p.add_argument("src", help="artifact directory")
    p.add_argument("dst", help="new output directory")
    p.add_argument("--base", default=None, metavar="BASE_DIR", help="base model directory (full fine-tune artifacts)")
    add_config_arguments(p, CompressionConfig, skip=("density", "alpha", "codec"))
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")

    p = sub.add_parser("inspect", help="show an artifact's metadata and figures (checksums and structure verified)")
    p.add_argument("src", help="artifact directory or compeft.safetensors file")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("similar", help="similarity of compressed artifacts from their bit planes (every pair)")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=INPUTS_HELP)
    p.set_defaults(config_fields=add_config_arguments(p, SimilarityConfig))
    p.add_argument("--json", action="store_true", help='print {"pairs": [...]} as JSON')

    for name, config, help_text in (
        ("merge", MergeConfig, "merge compressed artifacts (task arithmetic or TIES) into a PEFT adapter or an artifact"),
        ("compose", ComposeConfig, "compose an adapter for a task from compressed experts (LoraHub weights)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help=INPUTS_HELP)
        p.add_argument("--out", required=True, metavar="DST", help="new output directory")
        p.set_defaults(config_fields=add_config_arguments(p, config))
        p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
        p.add_argument("--json", action="store_true", help="print the result as JSON")

    for name, help_text in (
        ("calibrate", "choose α on a validation task with lm-eval"),
        ("registry", "query the compressed-artifact registry"),
        ("db", "registry database maintenance (upgrade)"),
        ("catalog", "compress a whole catalog of adapters (runs the Prefect flow in-process)"),
    ):
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_compress(args: argparse.Namespace) -> int:
    from compeft.api import compress

    config = config_from_args(CompressionConfig, args, args.config_fields)
    result = compress(args.src, args.dst, config, base=args.base, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    from compeft.api import decompress

    out = decompress(args.src, args.dst, base=args.base, device=args.device, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(f"wrote {out}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from compeft.api import inspect

    info = inspect(args.src).to_dict()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "source":
            continue
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key:<{width}}  {value}")
    for name, digest in sorted(info["source"].get("files", {}).items()):
        print(f"{'source ' + name:<{width}}  sha256:{digest}")
    return 0


def delegated(module_name: str, what: str):
    """A module of storage or flows, imported when a command first needs it (the library never imports them);
    one line naming what to install when it is missing."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise CompeftError(f"{what} needs extra packages ({err.name} missing): pip install 'compeft[all]'") from err


@contextmanager
def operation_inputs(inputs: Sequence[str], device: str):
    """The inputs as compeft.ops takes them, for the block: paths as given; artifact addresses (s3://BUCKET/PREFIX/DIR,
    hf://ORG/REPO@REV/SUB/DIR) fetched by storage's resolver into a temporary directory and opened as planes
    labelled with their address (so results and lineage name the address)."""
    if not any("://" in text for text in inputs):
        yield list(inputs)
        return
    from dataclasses import replace

    from compeft.devices import resolve_device
    from compeft.ops.files import planes_of

    remote = [text for text in inputs if "://" in text]
    with tempfile.TemporaryDirectory(prefix="compeft-inputs-") as work:
        fetched = delegated("storage.serving", "an input given as an address").fetch_inputs(remote, Path(work))
        opened = iter([replace(p, label=a) for p, a in zip(planes_of(fetched, resolve_device(device)), remote)])
        yield [next(opened) if "://" in text else text for text in inputs]


def run_similar(args: argparse.Namespace) -> int:
    from compeft.ops import similarity

    config = config_from_args(SimilarityConfig, args, args.config_fields)
    with operation_inputs(args.artifacts, config.device) as inputs:
        pairs = similarity(inputs, config)
    if args.json:
        print(json.dumps({"pairs": [p.to_dict() for p in pairs]}, indent=2))
        return 0

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for p in pairs:
        print(f"{p.a}  {p.b}  cosine {shown(p.cosine)}  overlap {shown(p.overlap)}  common {p.common:,}  "
              f"sign agreement {shown(p.sign_agreement)}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from compeft.ops import merge

    config = config_from_args(MergeConfig, args, args.config_fields)
    with operation_inputs(args.artifacts, config.device) as inputs:
        result = merge(inputs, args.out, config, overwrite=args.overwrite)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


def run_compose(args: argparse.Namespace) -> int:
    from compeft.ops import compose

    config = config_from_args(ComposeConfig, args, args.config_fields)
    with operation_inputs(args.artifacts, config.device) as inputs:
        result = compose(inputs, args.out, config, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "compress": run_compress,
    "decompress": run_decompress,
    "inspect": run_inspect,
    "similar": run_similar,
    "merge": run_merge,
    "compose": run_compose,
}


def dispatch(argv: list[str]) -> int:
    if argv and argv[0] in DELEGATED:
        module_name, func_name = DELEGATED[argv[0]]
        module = delegated(module_name, f"'compeft {argv[0]}'")
        return int(getattr(module, func_name)(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    if args.version:
        from compeft.version import __version__

        print(__version__)
        return 0
    if not args.command:
        build_parser().print_help()
        return 2
    return COMMANDS[args.command](args)


def one_line(err: BaseException) -> str:
    """The error's first non-blank line: wrapped library messages (hub clients, transformers) span several."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def closed_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return dispatch(argv)
    except CompeftError as err:
        if debug:
            traceback.print_exc()
        print(f"compeft: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("compeft: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as other command-line tools do
        closed_stdout()
        return 128 + 13  # killed by SIGPIPE
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, exit code 1
        if debug:
            traceback.print_exc()
        else:
            print(f"compeft: internal error: {type(err).__name__}: {one_line(err)} (run with --debug for the traceback)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
