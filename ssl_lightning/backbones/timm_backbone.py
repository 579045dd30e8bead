"""Any timm model as a backbone: ``backbone=timm backbone.name=convnext_atto`` (timm, Wightman 2019).

The model is built by ``timm.create_model(name, num_classes=0)`` (classifier removed, pooled features out) and
wrapped so it exposes ``num_features`` like every ssl_lightning backbone; its weights sit under ``model.``, in
timm's own key names, so ``python -m ssl_lightning.export format=timm`` only strips that prefix. timm Vision
Transformers are wrapped in :class:`~ssl_lightning.backbones.timm_vit.TimmViT`, which adds the token interface
of our ViT (``forward_tokens`` with ``ids_keep`` / ``bool_masked_pos``), so the masked-image methods take them.

Weights: ``pretrained=true`` is timm's own path (``timm.create_model(pretrained=True)``: the Hugging Face Hub
or timm's URLs, cached under ``~/.cache``); ``checkpoint=FILE`` loads local weights (a timm / torch /
safetensors state_dict, or one wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``, e.g. the official MAE
checkpoints, or a file of ``ssl_lightning.export``), through the model's own ``checkpoint_filter_fn`` (which
resamples a ViT's position embedding to ``img_size``) and then a strict load.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssl_lightning.config import ConfigError, check


class TimmBackbone(nn.Module):
    """A timm model without classifier: ``(B, 3, H, W) -> (B, num_features)``.

    ``num_features`` is the width of what ``forward`` returns: timm's ``head_hidden_size`` where a model has a
    pre-logits layer wider than its last stage (MobileNetV3, EfficientNet-style conv heads), else ``num_features``.
    Inputs smaller than ``min_input_size`` (the model's total stride, when resizing is on) are resized up to it
    (bilinear) before the model, so a 32x-downsampling network still has a last stage on 16-px images.
    """

    def __init__(self, model: nn.Module, name: str, min_input_size: int = 0):
        super().__init__()
        self.model, self.name, self.min_input_size = model, name, int(min_input_size)
        self.num_features = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_input_size:  # static shapes: no device sync
            x = F.interpolate(x, size=(self.min_input_size, self.min_input_size), mode="bilinear", align_corners=False)
        return self.model(x)  # (B, num_features)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = self.model.no_weight_decay() if hasattr(self.model, "no_weight_decay") else set()
        return {f"model.{n}" for n in names}


def close_matches(name: str) -> str:
    import timm

    matches = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    return f"close matches: {', '.join(matches)}" if matches else "see timm.list_models('*pattern*')"


def read_state_dict(file: str | Path, key: str = "backbone.checkpoint") -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch file (read without executing code), unwrapped from ``{"model": ...}``
    / ``{"state_dict": ...}`` and from the ``backbone.`` / ``model.`` / ``module.`` prefixes of ssl_lightning
    checkpoints, exports and DDP saves."""
    from ssl_lightning.checkpoint import is_state_dict, read

    path = Path(file).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"{key}={str(path)!r} is not a file")
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = read(path, key, how_to="give a timm / torch / safetensors state_dict of this model")
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not is_state_dict(state):
        raise ConfigError(f"{key}={str(path)!r} holds no state_dict (a dict of tensors)")
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    for prefix in ("model.", "module."):
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def load_local_weights(model: nn.Module, file: str, name: str) -> None:
    """Load ``file`` into the classifier-less timm ``model`` strictly, after timm's own filter for the model
    (key renames, position-embedding resampling) and with the classifier's weights dropped."""
    from ssl_lightning.checkpoint import load_weights

    state = read_state_dict(file)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as e:  # a filter meeting a foreign checkpoint fails in its own way
            raise ConfigError(f"backbone.checkpoint={file!r}: its weights do not fit timm model {name!r} "
                              f"({type(e).__name__}: {e})") from e
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    for head in (classifier,) if isinstance(classifier, str) else classifier:
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    load_weights(model, state, f"backbone.checkpoint={file!r}", f"timm model {name!r}")


def timm_backbone(name: str, pretrained: bool = False, checkpoint: str | None = None, img_size: int | None = None,
                  patch_size: int | None = None, drop_path_rate: float | None = None, resize_small_inputs: bool = True,
                  model_args: dict[str, Any] | None = None) -> nn.Module:
    """``timm.create_model(name, num_classes=0, ...)`` as a backbone.

    Args:
        name: any timm model name (``timm.list_models()``), with or without a pretrained tag
            (``vit_small_patch16_224.augreg_in21k``); an unknown name fails listing the close matches.
        pretrained: load timm's published weights (downloads on first use; needs the network).
        checkpoint: a local weights file instead (see the module docstring).
        img_size: input size, passed only to models built for one input size (ViT, Swin: timm's
            ``fixed_input_size``); convolutional networks take any size. The config sets ``${data.image_size}``.
        patch_size: a ViT's patch size (e.g. 4 for 32-px images); ``null`` keeps the model's.
        drop_path_rate: stochastic depth; ``null`` keeps timm's default.
        resize_small_inputs: for models of any input size, resize images smaller than the model's total stride
            (timm's ``feature_info``: 32 for ResNets and ConvNeXts) up to it; false: such images are an error.
        model_args: further keyword arguments of the timm model class (e.g. ``{global_pool: avg}``).
    """
    import timm

    from ssl_lightning.backbones.timm_vit import TimmViT, token_interface_problem

    check(isinstance(name, str) and timm.is_model(name), "backbone.name", name,
          f"a timm model name ({close_matches(str(name))})")
    check(not (pretrained and checkpoint), "backbone.pretrained", pretrained,
          "false when backbone.checkpoint is given (the weights come from one place)")
    kwargs: dict[str, Any] = dict(model_args or {})
    cfg = timm.models.get_pretrained_cfg(name)
    fixed_size = bool(cfg is not None and getattr(cfg, "fixed_input_size", False))
    if img_size is not None and fixed_size:
        kwargs["img_size"] = img_size
    if patch_size is not None and patch_size != default_patch_size(name):
        kwargs["patch_size"] = patch_size
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        model = timm.create_model(name, pretrained=bool(pretrained), num_classes=0, **kwargs)
    except TypeError as e:
        raise ConfigError(f"backbone: timm model {name!r} does not take the arguments {sorted(kwargs)} ({e})") from e
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise ConfigError(f"backbone.pretrained=true: timm could not fetch the weights of {name!r} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); check the network or the Hugging Face cache, "
                          "or give local weights with backbone.checkpoint=FILE") from e
    if checkpoint:
        load_local_weights(model, checkpoint, name)
    if token_interface_problem(model) is None:
        size = model.patch_embed.img_size
        patch = model.patch_embed.patch_size
        check(size[0] % patch[0] == 0 and size[1] % patch[1] == 0, "backbone.patch_size", patch[0],
              f"a divisor of the image size {size[0]}")
        return TimmViT(model, name)
    stride = int((getattr(model, "feature_info", None) or [{}])[-1].get("reduction", 0))
    if img_size is not None and not fixed_size and img_size < stride and not resize_small_inputs:
        raise ConfigError(f"data.image_size={img_size} is not allowed with backbone.name={name}: it downsamples by {stride}, "
                          f"so its last stage would be empty; give images of {stride} px or more, or set "
                          "backbone.resize_small_inputs=true")
    return TimmBackbone(model, name, min_input_size=stride if resize_small_inputs and not fixed_size else 0)


def default_patch_size(name: str) -> int | None:
    """The patch size timm builds ``name`` with (``None`` for models without patches and unknown names): the
    ``${timm_patch_size:NAME}`` resolver behind ``backbone.patch_size`` of ``backbone=timm``, which the masked-image
    augmentations read before the backbone exists. Built on the meta device: no memory, no weights."""
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        return None
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    return int(patch[0]) if patch is not None else None
