"""OFT (peft ``PeftType.OFT``). Read: peft/tuners/oft/layer.py ``OFTLayer.reset_oft_parameters`` (the skew-symmetric
generators ``oft_R``/``oft_embedding_R`` zero, i.e. the identity rotation; normal with std 0.1 under
``init_weights: false``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``oft_R`` and ``oft_embedding_R`` are deltas from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("OFT", deltas=zeros("oft_R", "oft_embedding_R"))
