"""SHiRA (peft ``PeftType.SHIRA``). Read: peft/tuners/shira/layer.py ``ShiraLayer.update_layer`` (the sparse values
``shira_weight`` zero under ``init_weights``, normal otherwise; their positions ``shira_indices``, an int32
buffer); saving: peft/tuners/shira/model.py ``ShiraModel._get_adapter_state_dict``.

Rule: ``shira_weight`` is a delta from 0; the integer ``shira_indices`` are carried bit for bit."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("SHIRA", deltas=zeros("shira_weight"), carried=("shira_indices",))
