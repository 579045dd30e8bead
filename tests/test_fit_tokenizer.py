"""`python -m ssl_lightning.fit_tokenizer` writes a file that a BEiT run with the same overrides accepts."""

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ssl_lightning.config import config_dir
from ssl_lightning.fit_tokenizer import fit


def test_fitted_file_matches_the_beit_run(tmp_path, make_cfg):
    overrides = ["data=synthetic", "method.vocab_size=16", "method.tokenizer_fit_iters=3", "backbone.depth=1",
                 "backbone.embed_dim=32", "backbone.num_heads=2"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("fit_tokenizer", overrides=[f"paths.output_dir={tmp_path}", "device=cpu", *overrides])
    path = fit(cfg)
    assert path == tmp_path / "tokenizer.pt"
    run = make_cfg("method=beit", *overrides[1:], f"method.tokenizer_path={path}")
    model = instantiate(run.method, backbone=instantiate(run.backbone))
    assert bool(model.tokenizer.fitted) and model.tokenizer.codebook.shape == (16, 12)
    assert torch.isfinite(model.tokenizer.codebook).all()
