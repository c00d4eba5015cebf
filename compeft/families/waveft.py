"""WaveFT (peft ``PeftType.WAVEFT``). Read: peft/tuners/waveft/layer.py ``WaveFTLayer.update_layer`` and
``reset_wave_parameters`` (the wavelet coefficients ``waveft_spectrum`` zero under ``init_weights``, a scaled
normal draw otherwise; locations rebuilt from ``random_loc_seed``); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: ``waveft_spectrum`` is a delta from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("WAVEFT", deltas=zeros("waveft_spectrum"))
