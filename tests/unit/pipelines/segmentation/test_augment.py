"""Training augmentations keep image and labels aligned, fill with IGNORE, and are reproducible.

Images carry their labels as values (a labelled square with a distinct value), so a misaligned transform shows
up as image values that do not match the labels at the same pixels.
"""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from satseg_plugin.core.errors import InputError
from satseg_plugin.core.labels import IGNORE
from satseg_plugin.pipelines.segmentation.augment import AugmentConfig, augment_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NOTHING = AugmentConfig(symmetries=False, rotate_p=0.0, scale_p=0.0, jitter_p=0.0, gamma_p=0.0, blur_p=0.0,
                        noise_p=0.0, band_drop_p=0.0, grey_p=0.0)
GEOMETRY_ONLY = AugmentConfig(jitter_p=0.0, gamma_p=0.0, blur_p=0.0, noise_p=0.0, band_drop_p=0.0, grey_p=0.0)


def only(**changes) -> AugmentConfig:
    """NOTHING with the given augmentations switched on."""
    return AugmentConfig(**{**NOTHING.__dict__, **changes})


def squares(n=8, bands=3, height=64, width=64, dtype=torch.uint8):
    """A labelled off-centre square per crop: label 1 and image 1.0 inside, label 0 and image 0.5 outside."""
    labels = torch.zeros((n, height, width), dtype=dtype)
    labels[:, 8:30, 12:40] = 1
    images = (0.5 + 0.5 * labels.float())[:, None].repeat(1, bands, 1, 1)
    return images, labels


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def symmetries_of(x):
    """The 8 symmetries of the square applied to the last two dimensions of ``x``."""
    turns = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


def test_square_symmetries_are_exact_and_keep_labels_on_their_pixels():
    n, size = 32, 16
    labels = torch.randint(0, 4, (n, size, size), generator=seeded(5), dtype=torch.uint8)
    codes = torch.arange(size * size, dtype=torch.float32).reshape(size, size)  # every pixel distinct
    images = torch.stack([labels.float(), codes.expand(n, -1, -1)], dim=1)
    out, lab = augment_batch(images, labels, seeded(), only(symmetries=True))
    assert torch.equal(out[:, 0], lab.float())  # labels moved exactly with the image, no resampling
    seen = set()
    for i in range(n):
        matches = [k for k, s in enumerate(symmetries_of(codes)) if torch.equal(out[i, 1], s)]
        assert len(matches) == 1
        seen.add(matches[0])
        assert torch.equal(lab[i], symmetries_of(labels[i])[matches[0]])
    assert len(seen) >= 6  # 32 crops draw most of the 8 symmetries, not the identity only


def test_rectangular_crops_keep_their_shape_under_symmetries():
    images, labels = squares(n=16, height=24, width=40)
    out, lab = augment_batch(images, labels, seeded(), only(symmetries=True))
    assert out.shape == images.shape and lab.shape == labels.shape
    assert torch.equal(out[:, 0], 0.5 + 0.5 * lab.float())
    assert not torch.equal(lab, labels)


@pytest.mark.parametrize("config", [GEOMETRY_ONLY, only(rotate_p=1.0, scale_p=1.0)])
def test_rotation_and_zoom_keep_labels_aligned_and_fill_with_ignore(config):
    images, labels = squares(n=16)
    out, lab = augment_batch(images, labels, seeded(1), config)
    expected = torch.full(lab.shape, 0.0)
    expected[lab == 0], expected[lab == 1] = 0.5, 1.0  # IGNORE pixels came from outside: image fill 0
    # Bilinear resampling blends image values across an edge: each pixel's value lies between the smallest and
    # largest value the labels of its 3 x 3 neighbourhood call for (the outer ring of pixels has neighbours
    # outside the crop), and equals it away from edges.
    high = torch.nn.functional.max_pool2d(expected[:, None], 3, stride=1, padding=1)
    low = -torch.nn.functional.max_pool2d(-expected[:, None], 3, stride=1, padding=1)
    inner = (..., slice(1, -1), slice(1, -1))
    out, high, low = out[inner], high[inner].expand_as(out[inner]), low[inner].expand_as(out[inner])
    assert ((out >= low - 1e-4) & (out <= high + 1e-4)).all()
    flat = high == low
    assert flat.float().mean() > 0.8 and torch.allclose(out[flat], low[flat], atol=1e-4)
    assert set(lab.unique().tolist()) == {0, 1, IGNORE}
    assert not torch.equal(lab, labels)


def test_zoom_changes_the_labelled_area_by_the_square_of_the_factor():
    images, labels = squares(n=4)
    area = (labels == 1).sum(dim=(1, 2)).float()
    _, zoomed_in = augment_batch(images, labels, seeded(), only(scale_p=1.0, scale_range=(1.25, 1.25)))
    assert torch.allclose((zoomed_in == 1).sum(dim=(1, 2)) / area, torch.tensor(1.25 ** 2), rtol=0.08)
    assert not (zoomed_in == IGNORE).any()  # zooming in crops, nothing comes from outside
    out, zoomed_out = augment_batch(images, labels, seeded(), only(scale_p=1.0, scale_range=(0.75, 0.75)))
    assert torch.allclose((zoomed_out == 1).sum(dim=(1, 2)) / area, torch.tensor(0.75 ** 2), rtol=0.08)
    # Zooming out pads: a border of (1 - 0.75) / 2 * 64 = 8 px is IGNORE in the labels and 0 in the image.
    assert (zoomed_out[:, :7] == IGNORE).all() and (zoomed_out[:, :, -7:] == IGNORE).all()
    assert (zoomed_out[:, 9:-9, 9:-9] != IGNORE).all()
    assert (out[:, :, :7] == 0).all()


def test_same_seed_same_batch_other_seed_other_batch():
    images = torch.randn(8, 5, 32, 32, generator=seeded(3))
    labels = torch.randint(0, 3, (8, 32, 32), generator=seeded(4), dtype=torch.uint8)
    config = AugmentConfig(blur_p=0.5, noise_p=0.5, band_drop_p=0.5)
    first = augment_batch(images, labels, seeded(7), config)
    again = augment_batch(images, labels, seeded(7), config)
    other = augment_batch(images, labels, seeded(8), config)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("bands", [1, 3, 4, 5])
def test_band_dropout_zeroes_one_band_only_with_four_bands_or_more(bands):
    images = torch.randn(16, bands, 16, 16, generator=seeded(2)) + 3.0  # no band is zero by chance
    labels = torch.zeros(16, 16, 16, dtype=torch.uint8)
    out, _ = augment_batch(images, labels, seeded(), only(band_drop_p=1.0))
    zeroed = (out == 0).all(dim=(-2, -1))
    if bands < 4:
        assert torch.equal(out, images)
    else:
        assert (zeroed.sum(dim=1) == 1).all()
        assert torch.equal(out[~zeroed], images[~zeroed])  # the other bands are untouched
        assert len(set(zeroed.float().argmax(dim=1).tolist())) > 1  # the band is drawn, not always the same


def test_gamma_keeps_each_band_range_and_order_and_leaves_constant_bands_alone():
    images = torch.randn(8, 2, 16, 16, generator=seeded(2))
    images[:, 1] = 0.7
    labels = torch.zeros(8, 16, 16, dtype=torch.uint8)
    out, _ = augment_batch(images, labels, seeded(), only(gamma_p=1.0, gamma_range=(0.5, 0.5)))
    band, changed = images[:, 0].flatten(1), out[:, 0].flatten(1)
    assert torch.allclose(changed.amin(dim=1), band.amin(dim=1)) and torch.allclose(changed.amax(dim=1),
                                                                                     band.amax(dim=1))
    assert torch.equal(changed.argsort(dim=1), band.argsort(dim=1))  # monotonic: brighter stays brighter
    assert (changed.mean(dim=1) > band.mean(dim=1) + 0.1).all()  # gamma 0.5 lifts the middle values
    assert torch.equal(out[:, 1], images[:, 1])


def test_grey_blur_noise_and_jitter_change_the_image_as_described():
    images = torch.randn(8, 4, 32, 32, generator=seeded(2))
    labels = torch.zeros(8, 32, 32, dtype=torch.uint8)
    grey, _ = augment_batch(images, labels, seeded(), only(grey_p=1.0))
    assert torch.allclose(grey[:, 0], images[:, :3].mean(dim=1)) and torch.equal(grey[:, 0], grey[:, 2])
    assert torch.equal(grey[:, 3], images[:, 3])
    blurred, _ = augment_batch(images, labels, seeded(), only(blur_p=1.0))
    assert (blurred.std(dim=(-2, -1)) < 0.9 * images.std(dim=(-2, -1))).all()  # white noise is smoothed
    noisy, _ = augment_batch(images, labels, seeded(), only(noise_p=1.0, noise_std=0.1))
    assert 0.0 < (noisy - images).std() < 0.1
    jittered, _ = augment_batch(images, labels, seeded(), only(jitter_p=1.0, contrast=0.0, brightness=0.3))
    shift = (jittered - images).flatten(2)
    assert torch.allclose(shift, shift[..., :1], atol=1e-5) and shift.abs().max() <= 0.3 + 1e-5


@pytest.mark.parametrize("bands", [1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.long])
def test_every_augmentation_on_any_band_count_keeps_shapes_and_dtypes_without_nan(bands, dtype):
    always = AugmentConfig(rotate_p=1.0, scale_p=1.0, jitter_p=1.0, gamma_p=1.0, blur_p=1.0, noise_p=1.0,
                           band_drop_p=1.0, grey_p=1.0)
    images = torch.randn(6, bands, 24, 24, generator=seeded(2))
    labels = torch.randint(0, 3, (6, 24, 24), generator=seeded(3)).to(dtype)
    before = images.clone(), labels.clone()
    for config in (AugmentConfig(), always):
        out, lab = augment_batch(images, labels, seeded(), config)
        assert out.shape == images.shape and out.dtype == torch.float32
        assert lab.shape == labels.shape and lab.dtype == dtype
        assert torch.isfinite(out).all()
        assert set(lab.unique().tolist()) <= {0, 1, 2, IGNORE}
    assert torch.equal(images, before[0]) and torch.equal(labels, before[1])  # inputs are left as they were
    tiny, _ = augment_batch(torch.randn(2, bands, 4, 6), torch.zeros(2, 4, 6, dtype=dtype), seeded(), always)
    assert torch.isfinite(tiny).all()  # the blur kernel shrinks to fit a 4 px crop


def test_bad_settings_and_shapes_are_refused():
    with pytest.raises(InputError, match="^rotate_p: must be between 0 and 1, got 1.5"):
        AugmentConfig(rotate_p=1.5)
    with pytest.raises(InputError, match="^scale_range: must be"):
        AugmentConfig(scale_range=(1.3, 0.8))
    with pytest.raises(ValueError, match=r"labels \(N, H, W\)"):
        augment_batch(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 9, dtype=torch.uint8), seeded())
