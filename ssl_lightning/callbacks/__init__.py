"""Callbacks hold update rules and evaluation; the state they act on lives on the LightningModule."""

from ssl_lightning.callbacks.embedding_projector import EmbeddingProjector
from ssl_lightning.callbacks.knn import KNNEval, knn_predict
from ssl_lightning.callbacks.linear_probe import OnlineLinearProbe
from ssl_lightning.callbacks.momentum import MomentumUpdate, cosine_tau, ema_update_
from ssl_lightning.callbacks.view_grid import ViewGrid

__all__ = ["EmbeddingProjector", "KNNEval", "MomentumUpdate", "OnlineLinearProbe", "ViewGrid", "cosine_tau", "ema_update_", "knn_predict"]
