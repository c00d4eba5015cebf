"""One error tree for the whole project: every expected failure is a CompeftError with a one-line message.

The CLI prints ``str(err)`` and exits 2 for :class:`InputError` subclasses (bad usage or bad input)
and 1 for everything else.
"""

from __future__ import annotations


class CompeftError(Exception):
    """Root of every error compeft raises on purpose."""

    exit_code = 1


class InputError(CompeftError):
    """The user's input (arguments, files, options) is wrong; exit code 2."""

    exit_code = 2


class OptionError(InputError, ValueError):
    """An option has an invalid value (density outside (0, 1], unknown device, ...); ``field`` names the
    configuration field when there is one (the CLI shows its flag instead)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AdapterFormatError(InputError):
    """An adapter or model directory is missing files, holds pickles, or has malformed tensors."""


class UnknownCodecError(InputError, ValueError):
    """No codec is registered under the requested id."""


class ContainerError(InputError):
    """A compeft.safetensors file is malformed, truncated, of an unknown version, or inconsistent."""


class ChecksumError(ContainerError):
    """A checksum in a container does not match its bytes."""


class CodecError(InputError):
    """A codec payload is malformed (truncated, inconsistent lengths, out-of-range positions)."""


class DestinationExistsError(InputError):
    """The output directory already exists and overwriting was not requested."""


class DeviceError(InputError):
    """The requested device is not available (e.g. --device cuda without CUDA)."""


class AdapterMismatchError(InputError):
    """An artifact does not fit the live adapter it would replace (another family, target modules, ranks or
    options); nothing was written."""


class PoolError(InputError):
    """An adapter pool cannot do what was asked (unknown or active name, host memory budget too small)."""


class CalibrationError(CompeftError):
    """Calibration cannot run or produced no usable point."""


class TaskConfigError(CalibrationError, InputError):
    """A validation task is malformed (missing data files, unknown metric, bad YAML)."""

    exit_code = 2
