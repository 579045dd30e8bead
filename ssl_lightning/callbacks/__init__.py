"""Callbacks hold update rules and evaluation; the state they act on lives on the LightningModule."""

from ssl_lightning.callbacks.collapse import CollapseMonitor, normalized_std, rankme
from ssl_lightning.callbacks.dino import CenterUpdate, FreezeLastLayer, teacher_temperature
from ssl_lightning.callbacks.embedding_projector import EmbeddingProjector
from ssl_lightning.callbacks.knn import KNNEval, knn_predict
from ssl_lightning.callbacks.linear_probe import OnlineLinearProbe
from ssl_lightning.callbacks.momentum import MomentumUpdate, cosine_tau, ema_update_, frozen_copy, linear_tau
from ssl_lightning.callbacks.nonfinite import NonFiniteLoss, NonFiniteLossError
from ssl_lightning.callbacks.preemption import Preemption
from ssl_lightning.callbacks.progress import ProgressBar
from ssl_lightning.callbacks.queue import QueueUpdate, ring_enqueue_
from ssl_lightning.callbacks.reconstruction_grid import ReconstructionGrid
from ssl_lightning.callbacks.steps import AfterOptimizerStep
from ssl_lightning.callbacks.text_sample import TextSample
from ssl_lightning.callbacks.view_grid import ViewGrid
from ssl_lightning.callbacks.weight_decay import WeightDecaySchedule, cosine_value

__all__ = [
    "AfterOptimizerStep",
    "CenterUpdate",
    "CollapseMonitor",
    "EmbeddingProjector",
    "FreezeLastLayer",
    "KNNEval",
    "MomentumUpdate",
    "NonFiniteLoss",
    "NonFiniteLossError",
    "OnlineLinearProbe",
    "Preemption",
    "ProgressBar",
    "QueueUpdate",
    "ReconstructionGrid",
    "TextSample",
    "ViewGrid",
    "WeightDecaySchedule",
    "cosine_tau",
    "cosine_value",
    "ema_update_",
    "frozen_copy",
    "knn_predict",
    "linear_tau",
    "normalized_std",
    "rankme",
    "teacher_temperature",
    "ring_enqueue_",
]
