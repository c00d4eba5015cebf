"""Tensor dtypes by their safetensors names (F32, BF16, ...), the names every file of the project uses."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from compeft.errors import AdapterFormatError

DTYPE_NAMES: Mapping[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPES_BY_NAME: Mapping[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}
# numpy integers by byte size: views of any tensor's raw bytes, one integer per element
INT_OF_SIZE: Mapping[int, type] = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise AdapterFormatError(f"unsupported tensor dtype {dtype}") from None
