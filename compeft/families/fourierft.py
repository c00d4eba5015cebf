"""FourierFT (peft ``PeftType.FOURIERFT``). Read: peft/tuners/fourierft/layer.py ``FourierFTLayer.update_layer``
(the spectral coefficients ``fourierft_spectrum`` a normal draw, zero under ``init_weights``; the frequency
indices are rebuilt from ``random_loc_seed`` and not saved); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: ``fourierft_spectrum`` is a delta from 0 (a dense spectrum: it compresses correctly, calibration decides
whether it stays usable)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("FOURIERFT", deltas=zeros("fourierft_spectrum"))
