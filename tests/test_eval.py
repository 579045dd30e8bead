"""python -m ssl_lightning.eval: every protocol on a tiny pretraining checkpoint, and bad input."""

from __future__ import annotations

import json
import sys

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException

from ssl_lightning.config import ConfigError, config_dir
from ssl_lightning.data import SyntheticDataModule
from ssl_lightning.data.datasets import ArrayImages, synthetic
from ssl_lightning.eval import evaluate
from tests.conftest import error_of


def compose_eval(output_dir, *overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("eval", overrides=[f"paths.output_dir={output_dir}", "data=synthetic", "fabric.accelerator=cpu", *overrides])


def ckpt_of(run) -> str:
    return str(run / "checkpoints" / "last.ckpt")


def scalars(run_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))  # every events file of the run
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.parametrize(("protocol", "overrides", "curve"), [
    ("knn", ["protocol.k=20"], None),
    ("linear", ["protocol.epochs=3", "protocol.batch_size=16"], "linear/val_top1"),
    ("linear", ["protocol.optimizer=lbfgs", "protocol.lbfgs_max_iter=20"], "linear/val_top1"),
    ("linear", ["protocol.features=augmented", "protocol.epochs=1", "protocol.batch_size=16", "protocol.bn=true"], "linear/train_loss"),
    ("finetune", ["protocol.epochs=1", "protocol.batch_size=16"], "finetune/val_top1"),
])
def test_protocol_prints_writes_and_logs(pretrained_resnet, tmp_path, capsys, protocol, overrides, curve):
    results = evaluate(compose_eval(tmp_path, f"ckpt={ckpt_of(pretrained_resnet)}", f"protocol={protocol}", *overrides))
    top1, top5 = results["metrics"][f"{protocol}_top1"], results["metrics"][f"{protocol}_top5"]
    assert 0 <= top1 <= top5 == 100.0  # 4 classes: top-5 is top-4
    assert results["train_images"] == results["val_images"] == 64
    assert results["pretrained"]["method"] == "SimCLR" and results["pretrained"]["global_step"] == 4
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == results["metrics"]
    printed = capsys.readouterr().out
    assert f"| {protocol} " in printed and f"{top1:.2f}" in printed
    tags = scalars(tmp_path)
    assert {f"eval/{protocol}_top1", f"eval/{protocol}_top5"} <= tags
    assert curve is None or curve in tags


def test_finetune_vit_with_layer_decay(pretrained_vit, tmp_path):
    results = evaluate(compose_eval(tmp_path, f"ckpt={ckpt_of(pretrained_vit)}", "protocol=finetune", "protocol.epochs=1",
                                    "protocol.batch_size=16", "protocol.layer_decay=0.5"))
    assert results["pretrained"]["backbone"]["depth"] == 2
    assert 0 <= results["metrics"]["finetune_top1"] <= 100


def test_label_fraction_evaluates_on_the_fixed_subset(pretrained_resnet, tmp_path):
    results = evaluate(compose_eval(tmp_path, f"ckpt={ckpt_of(pretrained_resnet)}", "data.label_fraction=0.25"))
    counts = torch.bincount(torch.as_tensor(synthetic("bank", 16, 4, 64, seed=0).labels))
    assert results["train_images"] == sum(max(1, round(0.25 * int(n))) for n in counts) < 64
    assert results["label_fraction"] == 0.25 and results["val_images"] == 64


def test_exported_backbone_evaluates_like_the_checkpoint(pretrained_resnet, tmp_path):
    from ssl_lightning.export import main as export

    export([f"ckpt={ckpt_of(pretrained_resnet)}", f"out={tmp_path / 'backbone.pt'}"])
    from_ckpt = evaluate(compose_eval(tmp_path / "a", f"ckpt={ckpt_of(pretrained_resnet)}", "protocol.k=20"))
    from_file = evaluate(compose_eval(tmp_path / "b", f"ckpt={tmp_path / 'backbone.pt'}", "protocol.k=20"))
    assert from_file["metrics"] == from_ckpt["metrics"]
    assert from_file["pretrained"]["method"] == "SimCLR" and from_file["pretrained"]["global_step"] == 4
    # without its sidecar, the architecture comes from backbone=NAME
    (tmp_path / "backbone.pt.json").unlink()
    plain = evaluate(compose_eval(tmp_path / "c", f"ckpt={tmp_path / 'backbone.pt'}", "protocol.k=20", "backbone=resnet18"))
    assert plain["metrics"] == from_ckpt["metrics"]


def test_cli_prints_the_table_and_fails_in_one_line(pretrained_resnet, tmp_path, monkeypatch, capsys):
    from ssl_lightning.eval import main

    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["eval", f"ckpt={ckpt_of(pretrained_resnet)}", "data=synthetic", "fabric.accelerator=cpu",
                                      f"hydra.run.dir={tmp_path / 'ok'}"])
    main()
    assert "| knn " in capsys.readouterr().out and (tmp_path / "ok" / "results.json").is_file()
    monkeypatch.setattr(sys, "argv", ["eval", f"ckpt={tmp_path / 'missing.ckpt'}", "data=synthetic", f"hydra.run.dir={tmp_path / 'bad'}"])
    with pytest.raises(SystemExit) as info:
        main()
    assert str(info.value).startswith(f"Configuration error: ckpt='{tmp_path / 'missing.ckpt'}' is not a file")
    GlobalHydra.instance().clear()


# -- bad input ----------------------------------------------------------------------------------------


class UnlabelledDataModule(SyntheticDataModule):
    """Synthetic images whose labels are all -1 (as STL-10's unlabelled split)."""

    def build_split(self, split: str):
        data = super().build_split(split)
        return ArrayImages(data.images, -1 * torch.ones(len(data), dtype=torch.int64).numpy())


class TenLabelsDataModule(SyntheticDataModule):
    """Synthetic images labelled 0-9, more than data.num_classes says (as an ImageFolder of 10 classes with
    the default num_classes would be with fewer)."""

    def build_split(self, split: str):
        data = super().build_split(split)
        return ArrayImages(data.images, torch.arange(len(data)).remainder(10).numpy())


class TextDataModule(L.LightningDataModule):
    """Stands for a text datamodule in a checkpoint's config."""


def edited_checkpoint(src, dst, edit):
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


def bad_input_cases(tmp_path, resnet_ckpt, vit_ckpt):
    import argparse

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "epoch": 3}, foreign)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, pickled)
    plain = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, plain)
    text = edited_checkpoint(resnet_ckpt, tmp_path / "text.ckpt", lambda c: c["ssl_lightning"]["config"]["data"].update(
        _target_="tests.test_eval.TextDataModule"))
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1)}, evil)
    (tmp_path / "evil.pt.json").write_text(json.dumps({"format": "ssl_lightning.backbone", "backbone": {"_target_": "os.system", "command": "true"}}))
    unlabelled = "data._target_=tests.test_eval.UnlabelledDataModule"
    return [
        ([f"ckpt={foreign}"], "is a checkpoint not written by ssl_lightning (it has no 'ssl_lightning' entry"),
        ([f"ckpt={pickled}"], "torch.load(weights_only=True) refuses it (Unsupported global: GLOBAL argparse.Namespace"),
        ([f"ckpt={plain}"], "is a plain state_dict without its sidecar plain.pt.json: give its architecture with backbone=NAME"),
        ([f"ckpt={plain}", "backbone=resnet18"], "architecture mismatch: the weights do not fit ssl_lightning.backbones.resnet"),
        ([f"ckpt={resnet_ckpt}", "backbone=resnet50"], "architecture mismatch: the weights do not fit ssl_lightning.backbones.resnet(name=resnet50"),
        ([f"ckpt={resnet_ckpt}", "prefix=teacher_backbone"], "prefix='teacher_backbone' is not allowed"),
        ([f"ckpt={vit_ckpt}", "data.image_size=32"], "data.image_size=32 is not allowed: the backbone of ckpt="),
        ([f"ckpt={text}"], "holds a text backbone (method SimCLR, ssl_lightning.backbones.resnet); protocol=knn evaluates image backbones"),
        ([f"ckpt={evil}"], "names _target_='os.system'; only ssl_lightning backbones are built"),
        ([f"ckpt={resnet_ckpt}", "data.label_fraction=0"], "data.label_fraction=0 is not allowed: a fraction in (0, 1]"),
        ([f"ckpt={resnet_ckpt}", "data.label_fraction=1.5"], "data.label_fraction=1.5 is not allowed: a fraction in (0, 1]"),
        ([f"ckpt={resnet_ckpt}", "protocol=linear", unlabelled], "protocol=linear needs labelled images, but the bank split"),
        ([f"ckpt={resnet_ckpt}", "protocol=finetune", unlabelled], "protocol=finetune needs labelled images"),
        ([f"ckpt={resnet_ckpt}", "data._target_=tests.test_eval.TenLabelsDataModule"],
         "data.num_classes=4 is not allowed: the bank split has labels up to 9; set data.num_classes=10"),
        ([f"ckpt={resnet_ckpt}", "protocol=linear", "protocol.optimizer=lbfgs", "protocol.features=augmented"],
         "it needs cached features"),
        ([], "ckpt is required"),
    ]


def test_bad_input_fails_with_a_clear_message(pretrained_resnet, pretrained_vit, tmp_path):
    cases = bad_input_cases(tmp_path, ckpt_of(pretrained_resnet), ckpt_of(pretrained_vit))
    for overrides, message in cases:
        with pytest.raises((ConfigError, InstantiationException)) as info:
            evaluate(compose_eval(tmp_path / "run", *overrides))
            pytest.fail(f"{overrides} did not fail")
        assert message in error_of(info.value), (overrides, error_of(info.value))
