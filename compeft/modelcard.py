"""The README.md model card written into every artifact directory (YAML metadata + how to load)."""

from __future__ import annotations

import json


def _yaml_scalar(value) -> str:
    # JSON scalars are valid YAML scalars; quoting strings keeps names with ':' or '#' safe.
    return json.dumps(value)


def render_model_card(info, name: str) -> str:
    """Model card text of an artifact (``info``: its artifact.ArtifactInfo): front matter for hubs and a short
    body with figures and loading code."""
    tags = ["compeft", "compressed", "peft"] + ([info.peft_type.lower()] if info.peft_type else [])
    stats = {
        "codec": info.codec,
        "density": info.density,
        "alpha": info.alpha,
        "sigma": info.sigma,
        "scale": info.scale,
        "parameters": info.d,
        "kept": info.kept,
        "bits_per_param": round(info.bits_per_param, 4),
        "entropy_bits_per_param": round(info.entropy_bits_per_param, 4),
        "bytes": info.bytes_artifact,
        "source_bytes": info.bytes_source,
        "format_version": info.format_version,
        "package_version": info.package_version,
    }
    lines = ["---"]
    if info.base_model:
        lines.append(f"base_model: {_yaml_scalar(info.base_model)}")
    lines.append("library_name: peft" if info.kind == "adapter" else "library_name: transformers")
    lines.append("tags:")
    lines += [f"- {t}" for t in tags]
    lines.append("compeft:")
    lines += [f"  {k}: {_yaml_scalar(v)}" for k, v in stats.items() if v is not None]
    lines.append("---")
    ratio = f"{info.ratio:.1f}× smaller than the source file, " if info.ratio else ""
    lines += [
        "",
        f"# {name} (ComPEFT-compressed)",
        "",
        f"{'An adapter' if info.kind == 'adapter' else 'A full fine-tune residual'} compressed with "
        f"[ComPEFT](https://arxiv.org/abs/2311.13171): the top {100 * info.density:g}% of the task vector's entries "
        f"by magnitude are kept as signs times one scale α·σ = {info.scale:.6g} (α = {info.alpha:g}).",
        f"{info.d:,} parameters, {info.kept:,} kept; {info.bytes_artifact:,} bytes ({ratio}{info.ratio_16bit:.1f}× smaller than 16-bit), "
        f"{info.bits_per_param:.3f} bits/parameter for the signs (entropy bound {info.entropy_bits_per_param:.3f}).",
        "",
        *_derived_from(info.source),
        "## Load",
        "",
        "```bash",
        "pip install compeft",
        "compeft decompress THIS_DIR ADAPTER_DIR" + ("" if info.kind == "adapter" else " --base BASE_MODEL_DIR"),
        "```",
        "",
        "```python",
        "import compeft",
        "state_dict = compeft.load(\"THIS_DIR\", device=\"cuda\")  # reconstructed tensors on the GPU"
        if info.kind == "adapter"
        else "compeft.decompress(\"THIS_DIR\", \"MODEL_DIR\", base=\"BASE_MODEL_DIR\")",
        "```",
        "",
        "`compeft.safetensors` is a plain safetensors file; its `__metadata__` holds the compression document "
        "(format spec: docs/format.md in the compeft repository).",
        "",
    ]
    return "\n".join(lines)


def _derived_from(source) -> list[str]:
    """The lineage section of an artifact made by a merge or a composition (nothing for compressed adapters)."""
    lineage = next((source[k] for k in ("merge", "compose") if isinstance(source.get(k), dict)), None)
    return [*_lineage_lines(lineage), ""] if lineage else []


def _lineage_lines(lineage: dict) -> list[str]:
    """Markdown lines naming how an adapter was derived and from which artifacts."""
    operation = lineage.get("operation", "merge")
    head = (f"Made by **{operation}** of {len(lineage.get('inputs', []))} ComPEFT artifacts"
            + (f" with **{lineage['method']}**" if lineage.get("method") else "")
            + (f" (λ = {lineage['lam']:g})" if lineage.get("lam") is not None else "")
            + (f" for task `{lineage['task']}`" if lineage.get("task") else "") + ", in the adapter's parameter "
            "space (every saved tensor merged entry by entry):")
    lines = [head, "", "| input | sha256 of compeft.safetensors | weight |", "|---|---|---:|"]
    lines += [f"| `{i['path']}` | `{i['sha256'][:16]}…` | {i['weight']:.6g} |" for i in lineage.get("inputs", [])]
    return lines


def render_derived_card(name: str, base_model: str | None, lineage: dict) -> str:
    """Model card of a PEFT adapter made from compressed artifacts (a merge or a composition): front matter for hubs,
    the inputs with their weights, and how to load it."""
    operation = lineage.get("operation", "merge")
    lines = ["---"]
    if base_model:
        lines.append(f"base_model: {_yaml_scalar(base_model)}")
    lines += ["library_name: peft", "tags:", "- compeft", f"- {operation}", "- peft"]
    lines += ["compeft_lineage: " + json.dumps(lineage, sort_keys=True), "---", "", f"# {name}", ""]
    lines += _lineage_lines(lineage)
    lines += ["", "## Load", "", "```python", "from peft import PeftModel",
              "model = PeftModel.from_pretrained(base_model, \"THIS_DIR\")", "```", ""]
    return "\n".join(lines)
