"""Session fixtures for tests/core: tiny base models and PEFT adapters, each built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import builders  # noqa: E402


class Workshop:
    """Builds base models and adapters on first use and caches them for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._bases: dict[str, Path] = {}
        self._adapters: dict[str, builders.AdapterCase] = {}

    def base(self, kind: str) -> Path:
        if kind not in self._bases:
            self._bases[kind] = builders.build_base(kind, self.root / f"base-{kind}")
        return self._bases[kind]

    def adapter(self, name: str) -> builders.AdapterCase:
        if name not in self._adapters:
            kind = builders.ADAPTER_BASES[name]
            self._adapters[name] = builders.build_adapter(name, self.base(kind), kind, self.root / f"adapter-{name}")
        return self._adapters[name]


@pytest.fixture(scope="session")
def workshop(tmp_path_factory) -> Workshop:
    return Workshop(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def lora_dir(workshop) -> Path:
    """The all-linear LoRA adapter directory (the default input of container and CLI tests)."""
    return workshop.adapter("lora-all-linear").path


@pytest.fixture(scope="session")
def ia3_dir(workshop) -> Path:
    return workshop.adapter("ia3").path


@pytest.fixture(scope="session")
def head_dir(workshop) -> Path:
    """A LoRA adapter with a carried modules_to_save classification head."""
    return workshop.adapter("seqcls-head").path


@pytest.fixture(scope="session")
def lora_artifact(tmp_path_factory, lora_dir) -> Path:
    """A golomb artifact of the all-linear LoRA adapter (k = 0.1); treat as read-only."""
    import compeft

    dst = tmp_path_factory.mktemp("artifacts") / "lora-golomb"
    compeft.compress(lora_dir, dst, density=0.1, device="cpu")
    return dst


@pytest.fixture(scope="session")
def head_artifact(tmp_path_factory, head_dir) -> Path:
    """A bitmask artifact of the adapter with a carried head (k = 0.2); treat as read-only."""
    import compeft

    dst = tmp_path_factory.mktemp("artifacts") / "head-bitmask"
    compeft.compress(head_dir, dst, density=0.2, codec="bitmask", device="cpu")
    return dst


@pytest.fixture(scope="session")
def serving_cases(workshop, tmp_path_factory):
    """``serving_cases(family)``: a serving_cases.Case (variants, artifacts, references), made once per session."""
    import serving_cases as sc

    made: dict[str, sc.Case] = {}

    def get(name: str) -> sc.Case:
        if name not in made:
            made[name] = sc.Case(tmp_path_factory.mktemp(f"serving-{name}"), workshop, name)
        return made[name]

    return get
