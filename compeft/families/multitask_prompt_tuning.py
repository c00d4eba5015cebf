"""Multitask prompt tuning (peft ``PeftType.MULTITASK_PROMPT_TUNING``). Read:
peft/tuners/multitask_prompt_tuning/model.py ``MultitaskPromptEmbedding.__init__`` (the shared prompt as in prompt
tuning; the task factors ``prefix_task_cols``/``prefix_task_rows`` normal draws, or copied from source-task
prompts for the ``*_SOURCE_TASK*`` inits); saving also peft/tuners/multitask_prompt_tuning/model.py
``MultitaskPromptTuningModel._get_adapter_state_dict``; saving: peft/utils/save_and_load.py
``get_peft_model_state_dict`` with peft/tuners/tuners_utils.py ``BasePromptEncoder._get_adapter_state_dict`` and
peft/peft_model.py ``PeftModel.get_prompt_embedding_to_save`` (the encoder's output for the virtual tokens, saved
as ``prompt_embeddings``).

Rule: ``prompt_embeddings``, ``prefix_task_cols`` and ``prefix_task_rows`` are deltas from 0. (ComPEFT's
convention for a start that is not a constant, as stated in prompt_tuning.py: a dense prompt compresses correctly,
calibration decides whether it stays usable)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("MULTITASK_PROMPT_TUNING", deltas=zeros("prompt_embeddings", "prefix_task_cols", "prefix_task_rows"))
