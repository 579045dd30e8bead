"""GPU acceptance for issue 18 items 1, 2, 4 (MoCo, batched augmentation) and 8: skipped without CUDA.

SyncBatchNorm on CUDA is torch's (same parameter objects) and the lean global-statistics Function keeps no
more than BatchNorm; a 300k x 2048 kNN bank fits in bf16 and its top-k merge is exact; the batched augmentation
on CUDA equals the CPU's; MoCo's one-device Shuffle-BN draws its permutation on the device and runs without a
host synchronisation.
"""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
import torch.distributed as dist
from torch import nn

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


def _peak_during(fn) -> int:
    """Bytes allocated at the peak of ``fn()`` above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def test_cuda_conversion_uses_torch_syncbn_and_keeps_parameters():
    from ssl_lightning.nn import convert_sync_batchnorm

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4)).to(CUDA)
    net(torch.randn(2, 3, 8, 8, device=CUDA))
    params = {k: v for k, v in net.state_dict(keep_vars=True).items()}
    convert_sync_batchnorm(net)
    assert type(net[1]) is nn.SyncBatchNorm
    assert all(net.state_dict(keep_vars=True)[k] is v for k, v in params.items())


def test_lean_syncbn_function_keeps_no_more_than_batchnorm_on_cuda():
    """The CPU/gloo Function run on CUDA tensors (one-rank group): fwd+bwd peak within 1.5x BatchNorm's, same
    numbers."""
    from ssl_lightning.nn.sync_batchnorm import _GlobalBatchNorm

    x = torch.randn(64, 256, 32, 32, device=CUDA, requires_grad=True)
    g = torch.randn_like(x)
    bn = nn.BatchNorm2d(256).to(CUDA)

    def run_bn():
        y = bn(x)
        y.backward(g)

    w, b = bn.weight.detach().clone().requires_grad_(True), bn.bias.detach().clone().requires_grad_(True)

    def run_ours():
        y = _GlobalBatchNorm.apply(x, w, b, torch.zeros(256, device=CUDA), torch.ones(256, device=CUDA), 1e-5, 0.1, True)
        y.backward(g)

    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("nccl", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            run_bn(), run_ours()  # warm-up
            x.grad = None
            peak_bn = _peak_during(run_bn)
            grad_bn = x.grad.clone()
            x.grad = None
            peak_ours = _peak_during(run_ours)
        finally:
            dist.destroy_process_group()
    torch.testing.assert_close(x.grad, grad_bn, rtol=1e-4, atol=1e-4)
    assert peak_ours <= 1.5 * peak_bn, (peak_ours / 2**20, peak_bn / 2**20)


def test_300k_by_2048_bank_fits_in_bf16_and_the_topk_merge_is_exact():
    from ssl_lightning.callbacks.knn import _local_topk, knn_scores

    n, d, m, k = 300_000, 2048, 2048, 200
    g = torch.Generator(device=CUDA).manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(n, d, device=CUDA, generator=g), dim=1).to(torch.bfloat16)
    labels = torch.randint(0, 1000, (n,), device=CUDA, generator=g)
    queries = torch.randn(m, d, device=CUDA, generator=g)
    assert bank.nbytes == n * d * 2  # 1.2 GB, where the fp32 bank gathered to every rank took 2.5 GB per copy
    scores = None

    def run():
        nonlocal scores
        scores = knn_scores(queries, bank, labels, 1000, k=k, chunk_size=512, bank_rows=32768)

    peak = _peak_during(run)
    assert peak < 1.5 * 2**30, peak / 2**30  # chunks: never a fp32 copy of the bank
    q = torch.nn.functional.normalize(queries[:256].float(), dim=1)
    sim, idx = (q @ bank.float().T).topk(k, dim=1)  # the direct fp32 answer
    expected = torch.zeros(256, 1000, device=CUDA).scatter_add_(1, labels[idx], (sim / 0.1).exp())
    # the same votes, up to neighbours swapped at the k-th place by fp32 rounding (matmul blocking)
    torch.testing.assert_close(scores[:256].sum(1), expected.sum(1), rtol=1e-3, atol=0)
    assert (scores[:256].argmax(1) == expected.argmax(1)).float().mean() >= 0.98
    halves = [_local_topk(q, half, k, 32768) for half in bank.split(n // 2)]  # two shards, merged
    merged = torch.cat([halves[0][0], halves[1][0]], dim=1).topk(k, dim=1).values
    torch.testing.assert_close(merged, sim, rtol=0, atol=1e-5)


def test_batched_augmentation_on_cuda_equals_cpu():
    from ssl_lightning.transforms.batched import augment_views, draw_params
    from ssl_lightning.transforms.views import ViewSpec

    spec = ViewSpec(size=32, blur_prob=0.5, solarize_prob=0.2, grayscale_prob=0.3)
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8)
    params = torch.stack([draw_params(spec) for _ in range(128)])
    mean, std = [0.5] * 3, [0.25] * 3
    cpu = augment_views(crops, params, spec, mean, std)  # grouped on the CPU
    crops_cuda, params_cuda = crops.to(CUDA), params.to(CUDA)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # the blur's convolutions in full fp32, as on the CPU
    try:
        augment_views(crops_cuda, params_cuda, spec, mean, std)  # the first call makes the cached constants
        torch.cuda.set_sync_debug_mode("error")
        cuda = augment_views(crops_cuda, params_cuda, spec, mean, std)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        torch.backends.cudnn.allow_tf32 = tf32
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=1e-4)


def test_moco_one_device_shuffle_bn_on_cuda_without_host_sync(tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    cfg = compose_config(tmp_path, "method=moco", "method.proj_hidden_dim=32", "method.proj_output_dim=16",
                         "method.bn_splits=4", "method.queue_size=16", "data.image_size=16")
    torch.manual_seed(0)
    model = instantiate(cfg.method, backbone=instantiate(cfg.backbone)).to(CUDA).train()
    model.log = lambda *a, **k: None
    model.log_lr = lambda: None
    x = torch.randn(16, 3, 16, 16, device=CUDA)
    torch.backends.cudnn.allow_tf32 = False  # compared with a second computation below
    perm = model.shuffle_order(16, view=0, device=CUDA)
    assert perm.is_cuda and sorted(perm.tolist()) == list(range(16))
    reference = copy.deepcopy(model.key_backbone)
    shuffled, expected = x[perm], torch.empty(16, reference.num_features, device=CUDA)
    for g in range(4):  # one-device Shuffle-BN: sample n of the shuffled batch in BatchNorm group n % 4
        expected[g::4] = reference(shuffled[g::4])
    torch.cuda.set_sync_debug_mode("error")
    try:
        keys = model.keys(x)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.backends.cudnn.allow_tf32 = True
    got = torch.nn.functional.normalize(model.key_projector(expected).float(), dim=1)[torch.argsort(perm)]
    torch.testing.assert_close(keys, got, rtol=1e-3, atol=1e-3)
