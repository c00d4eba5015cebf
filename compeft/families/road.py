"""RoAd (peft ``PeftType.ROAD``). Read: peft/tuners/road/layer.py ``RoadLayer.update_layer`` and
``reset_parameters`` (angles ``road_theta`` zero, scales ``road_alpha`` one; normal around 0 and 1 under
``init_weights: false``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``road_theta`` is a delta from 0, ``road_alpha`` a delta from 1."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("ROAD", deltas={"road_theta": 0.0, "road_alpha": 1.0})
