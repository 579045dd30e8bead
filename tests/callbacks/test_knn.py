import pytest
import torch

from ssl_lightning.callbacks.knn import knn_predict, topk_accuracy


def clusters(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 10
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centers[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_well_separated_clusters_are_classified_perfectly():
    bank, bank_y = clusters(50, 5, 16, 0.1, seed=0)
    query, query_y = clusters(20, 5, 16, 0.1, seed=0)
    scores = knn_predict(query + 0.01, bank, bank_y, num_classes=5, k=20)
    assert topk_accuracy(scores, query_y)[1] == 100.0


def test_random_labels_give_chance_accuracy():
    g = torch.Generator().manual_seed(1)
    bank, query = torch.randn(2000, 32, generator=g), torch.randn(1000, 32, generator=g)
    bank_y, query_y = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (1000,), generator=g)
    acc = topk_accuracy(knn_predict(query, bank, bank_y, 10, k=200), query_y)
    assert acc[1] == pytest.approx(10.0, abs=4.0)
    assert acc[5] == pytest.approx(50.0, abs=6.0)


def test_weighted_vote_follows_similarity():
    # Two bank points: the query is much closer to class 1; with k=2 the exp(sim/T) weights must pick 1.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores = knn_predict(torch.tensor([[0.2, 1.0]]), bank, torch.tensor([0, 1]), num_classes=2, k=2, temperature=0.1)
    assert scores.argmax().item() == 1
    sim = torch.nn.functional.normalize(torch.tensor([[0.2, 1.0]]), dim=1) @ bank.T
    torch.testing.assert_close(scores, (sim / 0.1).exp())


def test_chunking_does_not_change_the_result():
    bank, bank_y = clusters(30, 4, 8, 3.0)
    query, _ = clusters(10, 4, 8, 3.0, seed=2)
    torch.testing.assert_close(knn_predict(query, bank, bank_y, 4, chunk_size=7), knn_predict(query, bank, bank_y, 4))


@pytest.mark.parametrize("show_progress", [False, True])
def test_feature_extraction_leaves_the_random_generator_as_it_was(show_progress):
    """Training must draw the same random numbers whether or not an evaluation ran before, with or without a
    progress bar (a loader's iterator draws its base seed from the host generator; tqdm makes it draw twice)."""
    from ssl_lightning.callbacks.knn import extract_features

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(10, 4), torch.arange(10)), batch_size=4)
    model = torch.nn.Linear(4, 3)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    feats, labels = extract_features(model, loader, torch.device("cpu"), show_progress=show_progress)
    assert feats.shape == (10, 3) and labels.tolist() == list(range(10))
    assert torch.equal(torch.random.get_rng_state(), before)
