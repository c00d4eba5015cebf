"""The in-place apply's Triton kernels (issue 17) compile for an H100 (sm_90) on a machine without a GPU: Triton's
CPU interpreter runs them (test_residual_serving) but does not check what only the GPU compiler refuses
(pointer casts, scalar alignment hints)."""

from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton")


def compile_for_h100(fn, signature: dict, constexprs: dict) -> str:
    """PTX of ``fn`` with every pointer argument 16-byte aligned (as Triton specializes a launch on aligned tensors)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    aligned = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in signature.items() if t.startswith("*")}
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=aligned)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="kernels defined for the interpreter")
def test_in_place_kernels_compile_for_sm90():
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401
    except ImportError:
        pytest.skip("Triton without its NVIDIA backend")
    from compeft.codecs.golomb import triton_apply as ta

    p64 = "*i64"
    apply_sig = {"buf": "*u8", "words": "*i32", "plan": p64, "K": "i64", "code_chunk": "*i32", "tile_xoff": p64,
                 "tile_roff": p64, "err": p64, "stops": "*i32", "values": "*fp32", "dest": p64, "saved": "i64",
                 "base": "i64", "ITYPE": "constexpr", "KIND": "constexpr", "MODE": "constexpr", "BLOCK": "constexpr"}
    for kind, mode in ((0, ta.ADD_SAVE), (1, ta.SUBTRACT), (2, ta.RESTORE), (0, ta.CHECK)):
        ptx = compile_for_h100(ta._apply_pass, apply_sig, {"ITYPE": ta._ITYPES[kind], "KIND": kind, "MODE": mode,
                                                           "BLOCK": 1024})
        assert ".entry" in ptx
