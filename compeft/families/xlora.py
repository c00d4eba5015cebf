"""X-LoRA (peft ``PeftType.XLORA``). Read: peft/tuners/xlora/model.py ``XLoraModel.__init__`` (the LoRA experts are
loaded from the paths in ``adapters`` and saved by peft/peft_model.py ``PeftModel.save_pretrained`` as ordinary
LoRA adapters in subfolders) and ``XLoraModel._get_adapter_state_dict`` (keeps keys containing
``internal_xlora_classifier``; the adapter-name filter of peft/utils/save_and_load.py ``get_peft_model_state_dict``
drops them first, so peft 0.21.2 writes an empty ``adapter_model.safetensors``).

Rule: none for the root file. It holds no trained tensor (the gating classifier, random nn.Linear inits, would be a
delta from 0, but peft does not save it); the experts are LoRA adapters of their own, compressed as such. The type
is refused with that reason."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("XLORA", refused=(
    "peft saves no X-LoRA tensor of its own (adapter_model.safetensors holds no gating classifier); its LoRA experts "
    "are ordinary LoRA adapters in the subfolders beside it: compress those"))
