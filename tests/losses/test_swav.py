import math

import pytest
import torch
import torch.nn.functional as F

from ssl_lightning.losses import sinkhorn_knopp, swav_loss


def sinkhorn_reference(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """SwAV (Caron et al., 2020), Algorithm 1 (``sinkhorn``), as loops in float64: Q = exp(scores / eps)^T
    (K x B), Q /= sum(Q); then ``iters`` times: each row (prototype) to mass 1/K, each column (sample) to
    mass 1/B; finally Q *= B so that every sample's column is a probability vector."""
    q = torch.exp(scores.double() / eps).T.clone()  # (K, B)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        for r in range(k):
            q[r] = q[r] / q[r].sum() / k
        for c in range(b):
            q[:, c] = q[:, c] / q[:, c].sum() / b
    return (q * b).T  # (B, K)


def random_scores(n: int, k: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.T  # cosine scores in [-1, 1], as in SwAV


@pytest.mark.parametrize(("eps", "iters"), [(0.05, 3), (0.1, 1), (0.05, 10)])
def test_sinkhorn_matches_paper_reference(eps, iters):
    scores = random_scores(12, 5)
    torch.testing.assert_close(sinkhorn_knopp(scores, eps, iters).double(), sinkhorn_reference(scores, eps, iters),
                               rtol=1e-4, atol=1e-6)


def test_codes_sum_as_the_paper_says():
    """Every sample's code is a probability vector over the K prototypes (exactly, the last normalisation is
    over samples); every prototype receives N/K samples' worth of mass, the equipartition constraint
    (Eq. 4), exactly in the limit of many iterations and more closely than the plain softmax after the paper's 3."""
    n, k = 40, 8
    scores = random_scores(n, k, seed=3)
    for iters in (3, 300):
        q = sinkhorn_knopp(scores, 0.05, iters)
        assert q.shape == (n, k) and (q >= 0).all()
        torch.testing.assert_close(q.sum(dim=1), torch.ones(n), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), n / k), rtol=1e-4, atol=0)
    # the prototype masses approach N/K: after 3 iterations closer than the plain softmax, after 10 closer still
    deviation = lambda q: (q.sum(dim=0) - n / k).abs().sum()  # noqa: E731
    d3, d10 = deviation(sinkhorn_knopp(scores, 0.05, 3)), deviation(sinkhorn_knopp(scores, 0.05, 10))
    assert d10 < d3 < deviation((scores / 0.05).softmax(dim=1))


def test_equipartition_spreads_a_batch_that_prefers_one_prototype():
    """Without the constraint every sample would go to prototype 0 (the collapse SwAV prevents)."""
    n, k = 30, 3
    scores = torch.zeros(n, k)
    scores[:, 0] = 1.0
    scores += 0.01 * torch.randn(n, k, generator=torch.Generator().manual_seed(0))
    assert (scores.softmax(dim=1).argmax(dim=1) == 0).all()
    q = sinkhorn_knopp(scores, 0.05, 200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), n / k), rtol=1e-3, atol=0)


def test_sinkhorn_stable_for_small_epsilon_where_plain_exp_is_not():
    scores = random_scores(16, 4, seed=5)
    eps = 0.005  # exp(1 / 0.005) = exp(200) overflows float32
    assert not torch.isfinite(torch.exp(scores / eps)).all()
    q = sinkhorn_knopp(scores, eps, 3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(16), rtol=0, atol=1e-5)


def test_sinkhorn_invariant_to_a_constant_shift_of_the_scores():
    scores = random_scores(10, 6, seed=2)
    torch.testing.assert_close(sinkhorn_knopp(scores + 3.0, 0.05, 3), sinkhorn_knopp(scores, 0.05, 3))


def test_sinkhorn_is_fp32_from_bf16_scores_under_autocast():
    scores = random_scores(10, 6, seed=4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = sinkhorn_knopp(scores, 0.05, 3)
    assert q.dtype == torch.float32
    torch.testing.assert_close(q, sinkhorn_knopp(scores.float(), 0.05, 3))


def swav_reference(scores, codes, assign, tau):
    """Caron et al. (2020), Eq. 1-2 and 5 (multi-crop), as loops in float64: for each coded crop s and each
    other crop t, -sum_k q_s^(k) log softmax(z_t^T C / tau)^(k), averaged over the batch, over the V - 1
    predicting crops, then over the coded crops."""
    v, b = len(scores), scores[0].shape[0]
    total = 0.0
    for q, s in zip(codes, assign):
        sub = 0.0
        for t in range(v):
            if t == s:
                continue
            for i in range(b):
                x = scores[t][i].double() / tau
                log_p = x - torch.log(torch.exp(x).sum())
                sub += -(q[i].double() * log_p).sum() / b
        total += sub / (v - 1)
    return total / len(assign)


@pytest.mark.parametrize(("views", "assign"), [(2, [0, 1]), (5, [0, 1]), (4, [1])])
def test_swav_loss_matches_paper_reference(views, assign):
    scores = [random_scores(6, 7, seed=10 * views + i) for i in range(views)]
    codes = [sinkhorn_knopp(scores[s], 0.05, 3) for s in assign]
    expected = swav_reference(scores, codes, assign, 0.1)
    assert swav_loss(scores, codes, assign, 0.1).item() == pytest.approx(expected.item(), rel=1e-5)


def test_swav_loss_analytic_value_for_uniform_predictions():
    # Equal scores give p = 1/K for every prototype; codes sum to 1 per sample: the loss is log K.
    k = 9
    scores = [torch.zeros(4, k) for _ in range(3)]
    codes = [torch.rand(4, k).softmax(dim=1) for _ in range(2)]
    assert swav_loss(scores, codes, [0, 1], 0.1).item() == pytest.approx(math.log(k), rel=1e-6)


def test_swav_loss_gradient_reaches_the_predictions_not_the_codes():
    scores = [random_scores(4, 5, seed=i).requires_grad_() for i in range(3)]
    codes = [sinkhorn_knopp(scores[i].detach(), 0.05, 3) for i in (0, 1)]
    swav_loss(scores, codes, [0, 1], 0.1).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)


def test_swav_loss_needs_two_crops_and_one_code_per_assigned_crop():
    s = torch.randn(4, 5)
    with pytest.raises(ValueError, match="needs >= 2 crops"):
        swav_loss([s], [s.softmax(1)], [0], 0.1)
    with pytest.raises(ValueError, match="one code per assigned crop"):
        swav_loss([s, s], [s.softmax(1)], [0, 1], 0.1)
