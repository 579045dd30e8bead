"""At the end of pretraining, TensorBoard's projector gets a bounded number of labelled validation embeddings."""

import torch

from ssl_lightning.data.datasets import synthetic


def test_validation_embeddings_with_labels_and_thumbnails(pretrained_resnet):
    """The shared run (64 validation images) sets ``num_points=50``."""
    logs = pretrained_resnet / "tensorboard"
    config = (logs / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "val/embeddings:00004"' in config and "sprite" in config  # at the last step
    folder = next(logs.glob("00004/val*embeddings"))
    vectors = [line.split("\t") for line in (folder / "tensors.tsv").read_text().splitlines()]
    labels = (folder / "metadata.tsv").read_text().splitlines()
    assert len(vectors) == len(labels) == 50 and {len(v) for v in vectors} == {512}
    assert (folder / "sprite.png").is_file()
    # the labels are those of the sampled validation images, in order
    g = torch.Generator().manual_seed(0)
    indices = torch.randperm(64, generator=g)[:50].sort().values
    assert labels == [str(int(y)) for y in synthetic("val", 16, 4, 64, seed=0).labels[indices.numpy()]]
