import pytest
import torch

from ssl_lightning.transforms import rotate_batch


def test_labels_match_the_applied_rotation():
    x = torch.randn(3, 3, 5, 5)
    rotated, labels = rotate_batch(x)
    for r in range(4):
        block = slice(3 * r, 3 * (r + 1))
        assert (labels[block] == r).all()
        torch.testing.assert_close(rotated[block], torch.rot90(x, r, dims=(2, 3)), rtol=0, atol=0)


def test_label_one_is_a_quarter_turn_counter_clockwise():
    # a b      b d
    # c d  ->  a c
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    rotated, labels = rotate_batch(x)
    assert rotated[labels == 1].flatten().tolist() == [2.0, 4.0, 1.0, 3.0]
    assert rotated[labels == 2].flatten().tolist() == [4.0, 3.0, 2.0, 1.0]


def test_the_batch_holds_each_image_four_times_once_per_label():
    x = torch.randn(6, 3, 4, 4)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (24, 3, 4, 4)
    assert torch.bincount(labels).tolist() == [6, 6, 6, 6]  # balanced
    for i in range(6):  # undoing each rotation gives back image i, once for every label
        back = [torch.rot90(rotated[r * 6 + i], -r, dims=(1, 2)) for r in range(4)]
        for b in back:
            torch.testing.assert_close(b, x[i], rtol=0, atol=0)


def test_non_square_images_are_refused():
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.randn(2, 3, 4, 6))
