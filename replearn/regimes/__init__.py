"""Training objectives ("regimes"): the base class, the registry and the built-in regimes (importing
registers them)."""
from replearn.regimes.base import REGIMES, DataInfo, Regime, RegimeOptions, make_regime, regime_name, register_regime
from replearn.regimes import supervised, autoencoder, denoising, vae, contrastive, joint  # noqa: E402,F401  (registration)
from replearn.regimes import byol, simsiam, barlow_twins, vicreg, supcon, masked  # noqa: E402,F401  (registration)

__all__ = ["REGIMES", "DataInfo", "Regime", "RegimeOptions", "make_regime", "regime_name", "register_regime"]
