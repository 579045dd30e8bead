"""Continue a prompt with a causal language model (``method=clm``) from a training checkpoint.

    python -m ssl_lightning.generate ckpt=outputs/DATE/TIME/checkpoints/last.ckpt prompt="ROMEO:" \\
        max_new_tokens=300 temperature=0.8 top_k=40

Keys (``key=value``): ``ckpt`` (required), ``prompt`` (default empty: the start of a document; ``\\n`` and
``\\t`` are a newline and a tab), ``max_new_tokens`` (200), ``temperature`` (1.0; 0 is greedy), ``top_k``
(null: all tokens), ``num_samples`` (1), ``seed`` (0), ``device`` (cpu, cuda, ...). The model and its
tokenizer are rebuilt from the checkpoint alone (its resolved run config and saved vocabulary). Prints the
prompt followed by each continuation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ssl_lightning.config import ConfigError, check, exit_on_config_error
from ssl_lightning.data.tokenizers import EOS_ID, tokenizer_from_state

DEFAULTS = {"ckpt": None, "prompt": "", "max_new_tokens": 200, "temperature": 1.0, "top_k": None, "num_samples": 1,
            "seed": 0, "device": "cpu"}


def parse_args(argv: list[str]) -> dict:
    """``key=value`` arguments over :data:`DEFAULTS`, typed and checked."""
    args = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise ConfigError(f"{arg!r} is not a key=value argument of generate: keys are {', '.join(DEFAULTS)}")
        args[key] = value
    try:
        for key in ("max_new_tokens", "num_samples", "seed"):
            args[key] = int(args[key])
        args["temperature"] = float(args["temperature"])
        top_k = args["top_k"]
        args["top_k"] = None if top_k is None or str(top_k).lower() in ("null", "none", "0") else int(top_k)
    except ValueError as e:
        raise ConfigError(f"generate: {e}") from None
    check(bool(args["ckpt"]), "ckpt", args["ckpt"], "a checkpoint file (ckpt=PATH)")
    check(args["max_new_tokens"] >= 0, "max_new_tokens", args["max_new_tokens"], "an integer >= 0")
    check(args["num_samples"] >= 1, "num_samples", args["num_samples"], "an integer >= 1")
    check(args["temperature"] >= 0, "temperature", args["temperature"], "a float >= 0 (0: greedy)")
    check(args["top_k"] is None or args["top_k"] > 0, "top_k", args["top_k"], "null or an integer > 0")
    args["prompt"] = args["prompt"].replace("\\n", "\n").replace("\\t", "\t")
    return args


def load_language_model(path: str | Path, device: str | torch.device = "cpu"):
    """The method of a language-method checkpoint, with its weights and tokenizer, in eval mode."""
    if not Path(path).is_file():
        raise ConfigError(f"ckpt={str(path)!r} is not a file: give a checkpoint written by a training run")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    meta = checkpoint.get("ssl_lightning") or {}
    if not meta.get("config") or not meta.get("tokenizer"):
        raise ConfigError(f"ckpt={str(path)!r} is not a checkpoint of an ssl_lightning language method (no config or tokenizer)")
    config = OmegaConf.create(meta["config"])
    method = instantiate(config.method, backbone=instantiate(config.backbone))
    method.load_state_dict(checkpoint["state_dict"])
    method.tokenizer = tokenizer_from_state(meta["tokenizer"])
    return method.to(device).eval()


def generate(args: dict) -> list[str]:
    """The continuations (without the prompt) that ``args`` asks for."""
    model = load_language_model(args["ckpt"], args["device"])
    if not hasattr(model, "generate"):
        raise ConfigError(f"ckpt={args['ckpt']!r} holds a {type(model).__name__} model: generation needs a causal "
                          "language model (a method=clm checkpoint)")
    prompt = model.tokenizer.encode(args["prompt"]) if args["prompt"] else torch.tensor([EOS_ID])  # start of a document
    ids = prompt[None].repeat(args["num_samples"], 1).to(args["device"])
    generator = torch.Generator(args["device"]).manual_seed(args["seed"])
    out = model.generate(ids, args["max_new_tokens"], args["temperature"], args["top_k"], generator)
    return [model.tokenizer.decode(row[prompt.numel():]) for row in out]


def main(argv: list[str] | None = None) -> None:
    with exit_on_config_error():
        args = parse_args(sys.argv[1:] if argv is None else argv)
        samples = generate(args)
    for i, text in enumerate(samples):
        if i:
            print("\n---")
        print(args["prompt"] + text)


if __name__ == "__main__":
    main()
