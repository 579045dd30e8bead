"""Projectors, predictors, decoders and other heads."""

from ssl_lightning.heads.dino_head import DINOHead, WeightNormLinear
from ssl_lightning.heads.ijepa_predictor import IJEPAPredictor
from ssl_lightning.heads.mae_decoder import MAEDecoder
from ssl_lightning.heads.mlp import MLP

__all__ = ["DINOHead", "IJEPAPredictor", "MAEDecoder", "MLP", "WeightNormLinear"]
