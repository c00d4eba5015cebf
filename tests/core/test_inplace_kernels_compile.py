"""The in-place apply's Triton kernels (issue 17) compile for an H100 (sm_90) on a machine without a GPU: Triton's
CPU interpreter runs them (test_residual_serving) but does not check what only the GPU compiler refuses
(pointer casts, 64-bit atomics, scalar alignment hints)."""

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
    from compeft.serving import negzero as nz

    p64 = "*i64"
    apply_sig = {"buf": "*u8", "words": "*i32", "plan": p64, "K": "i64", "code_chunk": "*i32", "tile_xoff": p64,
                 "tile_roff": p64, "err": p64, "stops": "*i32", "values": "*fp32", "dest": p64, "saved": "i64",
                 "base": "i64", "ITYPE": "constexpr", "KIND": "constexpr", "MODE": "constexpr", "BLOCK": "constexpr"}
    for kind, mode in ((0, ta.ADD_SAVE), (1, ta.SUBTRACT), (2, ta.RESTORE), (0, ta.CHECK)):
        ptx = compile_for_h100(ta._apply_pass, apply_sig, {"ITYPE": ta._ITYPES[kind], "KIND": kind, "MODE": mode,
                                                           "BLOCK": 1024})
        assert ".entry" in ptx
    find_sig = {"spans": p64, "S": "i64", "addrs": p64, "ref": "*i16", "ref_addr": "i64", "found": p64, "counter": p64,
                "capacity": "i64", "ITYPE": "constexpr", "WIDTH": "constexpr", "NEG": "constexpr", "ALIGNED": "constexpr",
                "FULL": "constexpr", "SPAN": "constexpr", "BLOCK": "constexpr"}
    restore_sig = {"found": p64, "n": "i64", "addrs": p64, "widths": p64, "WIDTH": "constexpr", "ITYPE": "constexpr",
                   "NEG": "constexpr", "BLOCK": "constexpr"}
    for width, (itype, neg) in nz._ITYPES.items():
        sig = find_sig | {"ref": f"*i{8 * width}"}
        for full in (True, False):
            ptx = compile_for_h100(nz._find, sig, {"ITYPE": itype, "WIDTH": width, "NEG": neg, "ALIGNED": True,
                                                   "FULL": full, "SPAN": nz.SPAN, "BLOCK": nz.BLOCK})
            assert "atom.global" in ptx
            if full:  # whole spans of aligned weights are read with 16-byte vector loads, not one entry at a time
                assert "ld.global.v4.b32" in ptx and f"ld.global.b{8 * width} " not in ptx, "the −0.0 pass's loads are scalar"
        ptx = compile_for_h100(nz._restore, restore_sig, {"WIDTH": width, "ITYPE": itype, "NEG": neg, "BLOCK": nz.BLOCK})
        assert ".entry" in ptx
