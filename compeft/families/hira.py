"""HiRA (peft ``PeftType.HIRA``). Read: peft/tuners/hira/layer.py ``HiraLayer.update_layer`` and
``reset_hira_parameters`` (``hira_A`` Kaiming-uniform or Gaussian, ``hira_B`` zero; embeddings: A zero, B normal;
both random under ``init_weights: false``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``hira_A``, ``hira_B``, ``hira_embedding_A``, ``hira_embedding_B`` are deltas from 0 (random factors by
ComPEFT's convention)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("HIRA", deltas=zeros("hira_A", "hira_B", "hira_embedding_A", "hira_embedding_B"))
