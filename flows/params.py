"""Typed flow parameters (pydantic), generated from the configuration dataclasses they stand for: the field
names, types, defaults, descriptions, choices (drop-downs in the Prefect UI's run form), labels and the form's
order (main options first, ``advanced`` ones after: ``storage.models.in_form_order``) come from ``compeft.config``
and ``storage.config``, and every value is checked by building those objects."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from compeft.config import CalibrationConfig, ComposeConfig, CompressionConfig, MergeConfig
from storage.config import ServiceConfig
from storage.models import FormField, form_fields, in_form_order


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def compression(self) -> CompressionConfig:
        """The fixed-(k, α) configuration."""
        return CompressionConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CompressionConfig)})

    def task_for(self, adapter_name: str) -> str | None:
        """The validation task of one adapter (per-adapter mapping first, then the catalog-wide task)."""
        return self.tasks.get(adapter_name) or self.task

    def config_for(self, adapter_name: str) -> CompressionConfig | CalibrationConfig:
        """How one adapter is compressed: calibrated on its task, else at the fixed (k, α)."""
        task = self.task_for(adapter_name)
        if task is None:
            return self.compression()
        names = [f.name for f in dataclasses.fields(CalibrationConfig) if f.name in type(self).model_fields]
        return CalibrationConfig(task=task, **{n: getattr(self, n) for n in names if n != "task"})

    @model_validator(mode="after")
    def _checked(self):
        self.compression()
        for name in {*self.tasks, ""}:
            if self.task_for(name):
                self.config_for(name)
        return self


# the calibration fields a catalog does not set per run: the task (its own field and the per-adapter map), codec
# and device (the compression's), lm-eval's seed and batch size (their defaults)
CALIBRATION_SKIPPED = ("task", "codec", "device", "seed", "batch_size")
_TASKS = {
    "task": FormField(str | None, None, "Validation task (lm-eval task name or task YAML path) for every adapter: "
                      "calibrate α instead of using the fixed α.", "Validation task", False),
    "tasks": FormField(dict[str, str], None, "Per-adapter validation tasks, adapter name -> task; overrides the "
                       "validation task for those adapters.", "Validation task per adapter", False, dict),
}
_FULL = {  # issue 17: full fine-tunes in a catalog
    "base_for": FormField(dict[str, str], None, "Full fine-tunes: the base model (directory or Hub id) of each, "
                          "fine-tune name -> base; overrides what its model card or config names.",
                          "Base model per full fine-tune", True, dict),
}
CompressionOptions = create_model(
    "CompressionOptions",
    __base__=_Options,
    __doc__="How each adapter is compressed: a fixed (density, α), or α chosen on a validation task.",
    **in_form_order(form_fields(CompressionConfig), _TASKS, form_fields(CalibrationConfig, skip=CALIBRATION_SKIPPED),
                    _FULL),
)


class _Service(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def config(self) -> ServiceConfig:
        return ServiceConfig(**self.model_dump())

    @model_validator(mode="after")
    def _checked(self):
        self.config()
        return self


ServiceParameters = create_model("ServiceParameters", __base__=_Service, __doc__=ServiceConfig.__doc__,
                                 **in_form_order(form_fields(ServiceConfig)))
DEFAULT_OPTIONS = CompressionOptions()
DEFAULT_SERVICE = ServiceParameters()


class _Operation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    CONFIG: ClassVar[type]

    def config(self):
        """The configuration object these parameters stand for."""
        return self.CONFIG(**self.model_dump())

    @model_validator(mode="after")
    def _checked(self):
        self.config()
        return self


MergeOptions = create_model("MergeOptions", __base__=_Operation, __doc__=MergeConfig.__doc__, **in_form_order(form_fields(MergeConfig)))
MergeOptions.CONFIG = MergeConfig
ComposeOptions = create_model("ComposeOptions", __base__=_Operation, __doc__=ComposeConfig.__doc__,
                              **in_form_order(form_fields(ComposeConfig)))
ComposeOptions.CONFIG = ComposeConfig
