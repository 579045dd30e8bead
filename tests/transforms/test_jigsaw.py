import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ssl_lightning.config import ConfigError
from ssl_lightning.data import TransformedDataset
from ssl_lightning.data.datasets import ArrayImages
from ssl_lightning.transforms import JigsawTransform, hamming_permutations
from ssl_lightning.transforms.jigsaw import (
    assemble_tiles,
    colour_tiles,
    cut_tiles,
    min_image_size,
    normalise_tiles,
    shift_hue,
    shuffle_tiles,
    unshuffle_tiles,
)

PLAIN = dict(crop_scale=(1.0, 1.0), hflip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, num_permutations=10)


def position_image(size: int) -> Image.Image:
    """Every pixel says where it is: R = row, G = column (so a tile's first pixel gives its position)."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    rgb = torch.stack([rows * 8, cols * 8, torch.full_like(rows, 128)], dim=-1).clamp(max=255).byte()
    return Image.fromarray(rgb.numpy())


def test_tiles_permuted_and_unpermuted_reassemble_the_image():
    image = torch.rand(2, 3, 12, 12)
    tiles = cut_tiles(image, 3, cell=4, tile=4, offsets=torch.zeros(9, 2, dtype=torch.long))  # no gaps, no jitter
    assert tiles.shape == (2, 9, 3, 4, 4)
    perm = hamming_permutations(10, 3)[[3, 7]]  # one permutation per image
    shuffled = shuffle_tiles(tiles, perm)
    assert not torch.equal(shuffled, tiles)
    for b in range(2):
        for j in range(9):  # position j shows the tile of cell perm[j]
            torch.testing.assert_close(shuffled[b, j], tiles[b, perm[b, j]], rtol=0, atol=0)
    torch.testing.assert_close(assemble_tiles(unshuffle_tiles(shuffled, perm), 3), image, rtol=0, atol=0)


def test_transform_puzzles_reassemble_the_image_without_jitter():
    t = JigsawTransform(size=12, tile_fraction=1.0, tile_jitter=False, **PLAIN)
    image = position_image(12)
    out = t(image)
    assert out["tiles"].shape == (9, 3, 4, 4) and out["image"].shape == (3, 12, 12)
    cells = unshuffle_tiles(out["tiles"], t.permutations[out["perm"]])
    expected = normalise_tiles(cut_tiles(TF.to_tensor(image), 3, 4, 4, torch.zeros(9, 2, dtype=torch.long)))
    torch.testing.assert_close(cells, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(assemble_tiles(cells, 3).shape, torch.Size([3, 12, 12]))


def test_tiles_are_cut_at_random_positions_inside_their_cells():
    t = JigsawTransform(size=30, tile_fraction=0.7, **PLAIN)  # 10-px cells, 7-px tiles: offsets 0..3
    # random pixels: a per-channel ramp would normalise (per tile and channel) to the same crop at every offset
    image = Image.fromarray(torch.randint(0, 256, (30, 30, 3), generator=torch.Generator().manual_seed(0)).byte().numpy())
    offsets = set()
    raw = TF.to_tensor(image)
    for seed in range(20):
        torch.manual_seed(seed)
        out = t(image)
        cells = unshuffle_tiles(out["tiles"], t.permutations[out["perm"]])
        for k in range(9):
            r, c = divmod(k, 3)
            # find where the tile came from: the normalisation is affine per tile, so compare normalised crops
            hits = [(dy, dx) for dy in range(4) for dx in range(4)
                    if torch.allclose(cells[k], normalise_tiles(raw[:, 10 * r + dy : 10 * r + dy + 7, 10 * c + dx : 10 * c + dx + 7]), atol=1e-5)]
            assert len(hits) == 1, (seed, k)
            offsets.add(hits[0])
    assert len(offsets) > 10  # the gaps vary: edges of neighbouring tiles do not line up


def test_every_tile_is_normalised_on_its_own_per_channel():
    t = JigsawTransform(size=24, num_permutations=10, grayscale_prob=0.0)
    tiles = t(Image.fromarray((torch.rand(24, 24, 3) * 255).byte().numpy()))["tiles"]  # (9, 3, t, t)
    torch.testing.assert_close(tiles.mean(dim=(2, 3)), torch.zeros(9, 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(tiles.std(dim=(2, 3)), torch.ones(9, 3), rtol=0, atol=1e-4)


def test_tile_normalisation_matches_the_reference_implementation():
    """bbrattoli/JigsawPuzzlePytorch: m, s = tile.view(3, -1).mean(dim=1), tile.view(3, -1).std(dim=1);
    s[s == 0] = 1; Normalize(m, s)."""
    tiles = torch.rand(5, 3, 7, 7)
    tiles[0, 2] = 0.3  # a flat channel: only centred
    expected = []
    for tile in tiles:
        m, s = tile.view(3, -1).mean(dim=1), tile.view(3, -1).std(dim=1)
        s[s == 0] = 1
        expected.append(TF.normalize(tile, m.tolist(), s.tolist()))
    torch.testing.assert_close(normalise_tiles(tiles), torch.stack(expected), rtol=0, atol=1e-5)


def test_tile_colour_jitter_matches_torchvision_hue_and_draws_per_tile():
    x = torch.rand(4, 3, 6, 6)
    for shift in (-0.1, 0.05, 0.4):
        ref = torch.stack([TF.adjust_hue(xi, shift) for xi in x])
        torch.testing.assert_close(shift_hue(x, torch.full((4,), shift)), ref, rtol=0, atol=1e-5)
    torch.manual_seed(0)
    jittered = colour_tiles(x, (0.4, 0.4, 0.4, 0.1), jitter_prob=1.0, grayscale_prob=0.0)
    ratios = (jittered.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3)))
    assert ratios.std() > 0.01  # each tile drew its own factors
    gray = colour_tiles(x, (0.4, 0.4, 0.4, 0.1), jitter_prob=0.0, grayscale_prob=1.0)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    torch.testing.assert_close(colour_tiles(x, (0.4, 0.4, 0.4, 0.1), 0.0, 0.0), x, rtol=0, atol=0)


def test_vit_tiles_are_resized_and_clean_tiles_match_training_geometry():
    t = JigsawTransform(size=32, tile_size=32, **PLAIN)
    out = t(position_image(32))
    assert out["tiles"].shape == (9, 3, 32, 32)
    images = torch.randn(2, 3, 32, 32)
    assert t.clean_tiles(images).shape == (2, 9, 3, 32, 32)


def test_augmentation_is_a_function_of_the_sample_seed():
    images = ArrayImages((torch.rand(4, 16, 16, 3) * 255).byte().numpy(), torch.zeros(4, dtype=torch.long).numpy())
    data = TransformedDataset(images, JigsawTransform(size=16, num_permutations=10))
    a, b, c = data[(1, 123)][0], data[(1, 123)][0], data[(1, 124)][0]
    assert a["perm"] == b["perm"] and torch.equal(a["tiles"], b["tiles"])
    assert not torch.equal(a["tiles"], c["tiles"])


def test_images_too_small_for_the_tiles_fail_with_the_size_they_need():
    assert min_image_size(3, 0.85, jitter=True) == 9  # 3-px cells hold 2-px tiles with a 1-px gap
    with pytest.raises(ConfigError, match=r"augment.size=8 is not allowed: an image side of at least 9 px"):
        JigsawTransform(size=8, num_permutations=10)
    with pytest.raises(ConfigError, match=r"data.image_size=5 is not allowed: an image side of at least"):
        JigsawTransform(size=32, image_size=5, num_permutations=10)
    JigsawTransform(size=9, num_permutations=10)  # the smallest that works


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tile_fraction": 0.0}, r"augment.tile_fraction=0.0 is not allowed"),
        ({"tile_fraction": 1.0}, r"augment.tile_fraction=1.0 is not allowed: below 1 with augment.tile_jitter=true"),
        ({"jitter": [0.4, 0.4, 0.4]}, r"augment.jitter=\[0.4, 0.4, 0.4\] is not allowed"),
        ({"tile_size": 1}, r"augment.tile_size=1 is not allowed"),
        ({"data_overrides": {"sharpness": 0.1}}, r"data.augment.sharpness=0.1 is not allowed"),
        ({"grayscale_prob": 1.5}, r"augment.grayscale_prob=1.5 is not allowed: a probability"),
        ({"grid_size": 1}, r"method.grid_size=1 is not allowed"),
        ({"grid_size": 2, "num_permutations": 30}, r"method.num_permutations=30 is not allowed: an integer from 1 to 24"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        JigsawTransform(**{"size": 32, "num_permutations": 10, **kwargs})
