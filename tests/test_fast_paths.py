"""Fast paths: batched device augmentation, fp32 losses under bf16, channels-last, compilation. (The bf16 runs of
every method without host synchronisation moved to tests/test_no_host_sync.py.)"""

from __future__ import annotations

import shutil

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import default_collate

from ssl_lightning.backbones import resnet
from ssl_lightning.train import train
from ssl_lightning.transforms import MultiViewTransform
from ssl_lightning.transforms.batched import BLUR, JITTER, ORDER, CropViews, DeviceViews, augment_views, draw_params
from ssl_lightning.transforms.views import ViewSpec
from tests.methods.test_training import SMALL_HEADS

@pytest.mark.parametrize("name", ["nt_xent", "barlow_twins", "vicreg", "moco_v3", "sinkhorn"])
def test_losses_are_computed_in_fp32_under_bf16_autocast(name):
    """Autocast would run a matmul on fp32 inputs in bf16: the losses that need fp32 switch it off inside."""
    from ssl_lightning import losses

    fns = {"nt_xent": lambda a, b: losses.nt_xent_loss(a, b, 0.1),
           "barlow_twins": lambda a, b: losses.barlow_twins_loss(a, b),
           "vicreg": lambda a, b: losses.vicreg_loss(a, b)[0],
           "moco_v3": lambda a, b: losses.moco_v3_loss(a, b, 0.2),
           "sinkhorn": lambda a, b: losses.sinkhorn_knopp(a.float() / 8, 0.05, 3)}  # scores (N, K)
    torch.manual_seed(0)
    z1, z2 = torch.randn(32, 64).bfloat16(), torch.randn(32, 64).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fns[name](z1, z2)
    ref = fns[name](z1.float(), z2.float())  # the same bf16-rounded inputs, no autocast
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_channels_last_resnet_gives_the_same_features_and_gradients():
    torch.manual_seed(0)
    plain = resnet("resnet18", cifar_stem=True)
    fast = resnet("resnet18", cifar_stem=True, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16)
    a, b = plain(x), fast(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    a.square().sum().backward()
    b.square().sum().backward()
    g, h = plain.conv1.weight.grad, fast.conv1.weight.grad
    assert (g - h).norm() < 1e-4 * g.norm()


def test_channels_last_trains(make_cfg):
    metrics = train(make_cfg("method=byol", "backbone.channels_last=true", "trainer.fast_dev_run=true",
                             "callbacks=none", *SMALL_HEADS["byol"], "data.image_size=8"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


@pytest.mark.slow  # inductor's C++ compile: about a minute on a 2-core CPU
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None, reason="torch.compile needs a C++ compiler on CPU")
def test_compile_matches_eager(make_cfg):
    """``method.compile=true`` compiles the backbone (and its momentum copy) in place: same outputs, same names."""
    cfg = make_cfg("method=mae", *SMALL_HEADS["mae"], "backbone.depth=1", "method.compile=true", "data.image_size=8",
                   "backbone.patch_size=4")
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone))
    x = torch.randn(2, 3, 8, 8)
    eager = model(x)
    names = set(model.state_dict())
    model.configure_model()
    assert torch.allclose(model(x), eager, atol=1e-5)
    assert set(model.state_dict()) == names


# -- batched device augmentation ------------------------------------------------------------------------

def _images(n: int, size: int = 16) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(n, 3, 1, 1, generator=g) * 0.6 + 0.2 + 0.2 * torch.rand(n, 3, size, size, generator=g)
    return [Image.fromarray((im.permute(1, 2, 0).clamp(0, 1) * 255).byte().numpy()) for im in base]


def _batched(transform: MultiViewTransform, images, seed: int):
    crop, device = CropViews(transform), DeviceViews(transform)
    torch.manual_seed(seed)
    return device(default_collate([crop(im) for im in images]))


def test_device_augmentation_matches_the_pil_path_in_distribution():
    transform = MultiViewTransform(size=16, jitter=(0.4, 0.4, 0.2, 0.1), blur_sigma=(0.1, 2.0),
                                   views=[{"blur_prob": 1.0}, {"blur_prob": 0.1, "solarize_prob": 0.2}])
    images = _images(400)
    torch.manual_seed(1)
    pil = [transform(im) for im in images]
    batched = _batched(transform, images, seed=2)
    for v in range(2):
        p, q = torch.stack([x[v] for x in pil]), batched[v]
        assert p.shape == q.shape
        assert abs(p.mean() - q.mean()) < 0.1  # ~5 sd of the difference of 400-view means
        assert abs(p.std() - q.std()) < 0.05
        # per-view colourfulness (channel spread): drops under grayscale, moves under saturation / hue
        spread = lambda t: t.std(dim=1).mean(dim=(1, 2))  # noqa: E731
        assert abs(spread(p).mean() - spread(q).mean()) < 0.03
        assert abs((spread(p) < 1e-3).float().mean() - (spread(q) < 1e-3).float().mean()) < 0.13  # grey views: p = 0.2, 400 draws each, ~4.5 sd of the difference
        # sharpness (mean |horizontal gradient|): the blur probability of the view shows here
        sharp = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
        assert abs(sharp(p) - sharp(q)) < 0.1 * sharp(p)  # ~2.5 sd (seed-to-seed spread of 400-view means: 4%)


def test_device_augmentation_is_deterministic_under_a_seed():
    transform = MultiViewTransform(size=16)
    images = _images(8)
    a, b, c = _batched(transform, images, 3), _batched(transform, images, 3), _batched(transform, images, 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_grouped_and_whole_batch_augmentation_give_the_same_views():
    """The CPU path computes each random operation only on the samples it applies to; the GPU path computes
    the whole batch and selects (no data-dependent shapes). Same parameters, same views."""
    spec = ViewSpec(size=16, blur_prob=0.5, solarize_prob=0.2, grayscale_prob=0.3)
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (96, 3, 16, 16), dtype=torch.uint8)
    params = torch.stack([draw_params(spec) for _ in range(96)])
    assert 0 < params[:, BLUR].sum() < 96 and 0 < params[:, JITTER].sum() < 96  # both kinds of sample present
    grouped = augment_views(crops, params, spec, [0.5] * 3, [0.25] * 3, grouped=True)
    whole = augment_views(crops, params, spec, [0.5] * 3, [0.25] * 3, grouped=False)
    torch.testing.assert_close(grouped, whole, rtol=0, atol=1e-6)


def test_jitter_order_is_a_uniform_permutation():
    orders = torch.stack([draw_params(ViewSpec())[ORDER : ORDER + 4] for _ in range(2400)])
    assert torch.equal(orders.sort(dim=1).values, torch.arange(4.0).expand(2400, 4))  # a permutation each time
    first = torch.bincount(orders[:, 0].long(), minlength=4).float() / 2400
    assert (first - 0.25).abs().max() < 0.04  # each op first a quarter of the time (~4 sd)


def test_cpu_run_makes_the_batched_views_in_the_loader_workers():
    """On a CPU run with loader workers the batched half runs in the workers (on each collated batch) instead of
    in the training process, and gives exactly the views the training process would make from the same crops."""
    from ssl_lightning.data import SyntheticDataModule

    def first_batch(workers: int):
        dm = SyntheticDataModule(num_samples=16, image_size=16, batch_size=8, num_workers=workers, gpu_augment=True,
                                 train_transform=MultiViewTransform(size=16, blur_prob=0.5))
        # a CPU run (without a trainer the datamodule assumes the GPU where one is visible)
        dm.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                               enable_progress_bar=False, enable_model_summary=False)
        dm.setup("fit")
        views, labels = next(iter(dm.train_dataloader()))
        return dm, views

    in_workers, views = first_batch(1)
    in_process, crops = first_batch(0)
    assert in_workers.augments_in_workers() and not in_process.augments_in_workers()
    assert all(v.dtype == torch.float32 and v.shape == (8, 3, 16, 16) for v in views)  # already augmented
    for made_in_worker, made_here in zip(views, in_process.device_views(crops)):
        torch.testing.assert_close(made_in_worker, made_here, rtol=0, atol=1e-6)


def test_gpu_augment_trains(make_cfg):
    metrics = train(make_cfg("method=simclr", "data.gpu_augment=true", "trainer.fast_dev_run=true", "callbacks=none",
                             *SMALL_HEADS["simclr"], "data.image_size=8"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_gpu_augment_refuses_a_transform_it_cannot_batch(make_cfg):

    cfg = make_cfg("method=mae", "data.gpu_augment=true")
    with pytest.raises(Exception, match="data.gpu_augment=True is not allowed: false with MaskedImageTransform"):
        instantiate(cfg.data, train_transform=instantiate(cfg.augment))

