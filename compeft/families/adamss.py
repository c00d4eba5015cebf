"""AdaMSS (peft ``PeftType.ADAMSS``). Read: peft/tuners/adamss/layer.py ``AdamssLayer.update_layer`` (the subspace
bases ``adamss_A`` come from a seeded SVD and QR of the base weight, ``adamss_B`` zero under the default
``init_weights: 'orthogonal'``, the projection ``adamss_newB`` a persistent buffer from the same SVD); saving:
peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``adamss_B`` and ``adamss_A`` are deltas from 0: B starts at zero and A's base-derived start makes a no-op
product with it, which is ComPEFT's convention for such a trainable factor (as for LoRA A and EVA's A); the
projection ``adamss_newB`` is carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("ADAMSS", deltas=zeros("adamss_A", "adamss_B"), carried=("adamss_newB",))
