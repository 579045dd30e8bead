"""The k-means visual tokenizer: it fits, its codes are nearest codes and deterministic for fixed weights."""

import pytest
import torch

from ssl_lightning.data import TransformedDataset
from ssl_lightning.data.datasets import synthetic
from ssl_lightning.tokenizers import PatchKMeansTokenizer, codebook_stats, fit_kmeans_tokenizer, kmeans, load_tokenizer, save_tokenizer
from ssl_lightning.transforms import BlockwiseMasking, MaskedImageTransform

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def test_kmeans_recovers_separated_clusters_and_inertia_never_increases():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0], [5.0, 0.0]])
    x = (centres[:, None] + 0.1 * torch.randn(4, 200, 2, generator=g)).reshape(-1, 2)
    codebook, inertia = kmeans(x, 4, iters=10, seed=0)
    assert torch.cdist(centres, codebook).min(dim=1).values.max() < 0.1
    assert all(b <= a + 1e-7 for a, b in zip(inertia, inertia[1:]))


def test_kmeans_is_deterministic_for_a_seed():
    x = torch.rand(500, 12)
    a, _ = kmeans(x, 16, iters=5, seed=3)
    b, _ = kmeans(x, 16, iters=5, seed=3)
    assert torch.equal(a, b)


def tokenizer_with_random_codebook() -> PatchKMeansTokenizer:
    tokenizer = PatchKMeansTokenizer(vocab_size=20, patch_size=4, image_size=8)
    tokenizer.set_codebook(torch.rand(20, 48, generator=torch.Generator().manual_seed(0)))
    tokenizer.set_input_normalization(MEAN, STD)
    return tokenizer


def test_codes_are_the_nearest_codebook_entries_of_the_pixel_patches():
    tokenizer = tokenizer_with_random_codebook()
    pixels = torch.rand(2, 3, 8, 8)
    images = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    ids = tokenizer(images)
    assert ids.shape == (2, 4) and ids.dtype == torch.int64
    for b in range(2):  # reference: loop over patches in row-major order, brute-force nearest code
        for n in range(4):
            r, c = divmod(n, 2)
            patch = pixels[b, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(1, 2, 0).flatten().double()
            dists = ((tokenizer.codebook.double() - patch) ** 2).sum(dim=1)
            assert ids[b, n].item() == dists.argmin().item()


def test_codes_are_deterministic_for_fixed_weights_and_survive_a_file_round_trip(tmp_path):
    tokenizer = tokenizer_with_random_codebook()
    images = torch.randn(4, 3, 8, 8)
    ids = tokenizer(images)
    assert torch.equal(ids, tokenizer(images))
    loaded = load_tokenizer(save_tokenizer(tokenizer, tmp_path / "tok.pt"), image_size=8, patch_size=4, vocab_size=20)
    loaded.set_input_normalization(MEAN, STD)
    assert torch.equal(loaded(images), ids)
    assert not loaded.codebook.requires_grad


def test_fit_on_training_images_is_seeded_and_uses_the_codebook():
    transform = MaskedImageTransform(BlockwiseMasking(0.4, None), patch_size=4, size=16, mean=MEAN, std=STD, crop_scale=[0.3, 1.0])
    dataset = TransformedDataset(synthetic("train", 16, num_samples=32), transform)
    fit = lambda: fit_kmeans_tokenizer(dataset, MEAN, STD, 16, 4, 32, max_images=32, max_patches=400, iters=5, seed=0)  # noqa: E731
    (a, stats), (b, _) = fit(), fit()
    assert torch.equal(a.codebook, b.codebook) and bool(a.fitted)
    assert stats["patches"] == 400 and stats["usage"] > 0.9 and stats["perplexity"] > 10
    assert a.codebook.min() >= -0.01 and a.codebook.max() <= 1.01  # pixel space


def test_codebook_stats():
    assert codebook_stats(torch.tensor([5, 5, 0, 0])) == pytest.approx({"usage": 0.5, "perplexity": 2.0})
    assert codebook_stats(torch.tensor([1, 1, 1, 1]))["perplexity"] == pytest.approx(4.0)
