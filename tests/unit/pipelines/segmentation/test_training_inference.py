"""Training and seamless inference on a small generated scene (tiny models, a few batches)."""

import csv
import os

import numpy as np
import pytest
import rasterio
import rasterio.features

torch = pytest.importorskip("torch")
pytest.importorskip("segmentation_models_pytorch")

from affine import Affine

from sample_data.generate import generate_scene, read_buildings
from satseg_plugin.core.errors import CanceledError, InputError, OutputError
from satseg_plugin.core.grid import column_bands
from satseg_plugin.core.labels import LabelSet
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.models.checkpoint import load_checkpoint
from satseg_plugin.pipelines.segmentation.segment import MASK_NODATA, PROB_NODATA, InferenceConfig, segment_raster
from satseg_plugin.pipelines.segmentation.train import THRESHOLD_GRID, TrainConfig, train_segmentation

FAST = dict(encoder="resnet18", patch_size=64, batch_size=4, epochs=2, batches_per_epoch=2, max_val_tiles=8)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    paths = generate_scene(str(out), size=256, seed=3)
    buildings = read_buildings(paths["buildings"])
    return paths["scene"], LabelSet([b.polygon for b in buildings], [1] * len(buildings))


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    src, labels = scene
    out = tmp_path_factory.mktemp("model")
    result = train_segmentation(src, labels, str(out / "m.satseg"), TrainConfig(**FAST), "cpu",
                                log_path=str(out / "log.csv"), plot_path=str(out / "curve.png"))
    return result


def test_training_writes_model_log_and_plot(trained, scene):
    ckpt = load_checkpoint(trained.model_path, kind="segmentation")
    meta = ckpt.metadata
    assert (meta.architecture, meta.encoder, meta.bands, meta.classes) == ("unet", "resnet18", [1, 2, 3], ["building"])
    assert meta.patch_size == 64 and tuple(meta.pixel_size) == (0.5, 0.5)
    with rasterio.open(scene[0]) as src:
        data = src.read().reshape(3, -1).astype(float)
    np.testing.assert_allclose(meta.mean, data.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(meta.std, data.std(axis=1), rtol=1e-5)
    assert meta.metrics["best_epoch"] == trained.best_epoch and 0 <= meta.metrics["val_dice"] <= 1
    rows = list(csv.DictReader(open(trained.log_path)))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "val_loss", "val_dice", "val_iou", "val_threshold", "lr"}
    assert open(trained.plot_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the stored threshold is the one with the best validation Dice at the best epoch
    best = rows[trained.best_epoch - 1]
    assert meta.threshold == pytest.approx(float(best["val_threshold"])) and meta.threshold in THRESHOLD_GRID
    assert float(best["val_dice"]) == pytest.approx(meta.metrics["val_dice"])
    # the learning rate warmed up then decayed over the 4 steps of the schedule; the log shows the smoothed Dice
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and float(rows[1]["lr"]) < 1e-3
    assert [int(r["steps"]) for r in rows] == [2, 4] and "val_dice_smoothed" in rows[0]


def test_few_validation_objects_keep_the_last_weights(trained):
    """The 256 px scene holds 7 buildings: too few validation objects to pick an epoch by."""
    meta = load_checkpoint(trained.model_path, kind="segmentation").metadata
    assert trained.best_epoch == trained.epochs_run == 2 and meta.metrics["kept_epoch"] == "last"


def test_enough_validation_objects_keep_the_best_smoothed_epoch(scene, tmp_path, monkeypatch):
    from satseg_plugin.pipelines.segmentation import train as training

    monkeypatch.setattr(training, "MIN_SELECTION_OBJECTS", 0)
    feedback = RecordingFeedback()
    result = train_segmentation(scene[0], scene[1], str(tmp_path / "m.satseg"), TrainConfig(**dict(FAST, epochs=3)),
                                "cpu", feedback)
    smoothed = [row["val_dice_smoothed"] for row in result.history]
    assert result.best_epoch == int(np.argmax(smoothed)) + 1  # the first of equal scores
    meta = load_checkpoint(result.model_path, kind="segmentation").metadata
    assert meta.metrics["kept_epoch"] == "best smoothed validation Dice"
    assert not any("too few to pick an epoch" in m for m in feedback.infos)


def test_training_reports_held_out_scores_in_the_log_result_and_model(trained, scene):
    """After training, the kept model segments the validation blocks whole; the numbers reach every output."""
    report = trained.report
    assert report is not None and report.blocks >= 1 and report.val_objects >= 1
    assert report.train_objects + report.val_objects >= 2 and 0 <= report.object_f1 <= 1 and 0 <= report.dice <= 1
    meta = load_checkpoint(trained.model_path, kind="segmentation").metadata
    assert meta.metrics["heldout_object_f1"] == report.object_f1 and meta.metrics["val_objects"] == report.val_objects
    assert meta.metrics["train_objects"] == report.train_objects and meta.metrics["steps"] == 4
    # the 256 px scene holds 7 buildings: the few-labels warning is raised, naming what to do
    assert report.train_objects < 30 and any("draw more polygons" in w for w in report.warnings)


def test_time_limit_ends_training_with_the_schedule_fitted_to_it(scene, tmp_path):
    src, labels = scene
    fb = RecordingFeedback()
    result = train_segmentation(src, labels, str(tmp_path / "m.satseg"),
                                TrainConfig(**dict(FAST, epochs=50, max_minutes=0.001)), "cpu", fb)
    assert result.epochs_run == 1 and os.path.exists(result.model_path)
    assert any(m.startswith("Time limit 0.001 min: the schedule now ends after 2 steps") for m in fb.infos)
    assert any(m.startswith("Schedule finished after 2 steps") for m in fb.infos)
    assert any("held-out blocks" in m.lower() for m in fb.infos)


def test_threshold_tuning_picks_the_best_validation_dice(scene, tmp_path):
    """Tuned: the stored threshold beats every other grid threshold on the validation blocks; fixed: kept."""
    src, labels = scene
    tuned = train_segmentation(src, labels, str(tmp_path / "t.satseg"), TrainConfig(**dict(FAST, epochs=1)), "cpu")
    fixed = train_segmentation(src, labels, str(tmp_path / "f.satseg"),
                               TrainConfig(**dict(FAST, epochs=1, threshold=0.35)), "cpu")
    assert load_checkpoint(fixed.model_path).metadata.threshold == 0.35
    # same seed, same weights: the tuned run's Dice is the best over the grid, so at least the fixed one's
    assert tuned.best_dice >= fixed.best_dice
    with pytest.raises(InputError, match="THRESHOLD"):
        TrainConfig(threshold=1.5).validate()


def test_training_is_reproducible_on_cpu(scene, tmp_path):
    src, labels = scene
    states = []
    for name in ("a", "b"):
        result = train_segmentation(src, labels, str(tmp_path / f"{name}.satseg"),
                                    TrainConfig(**dict(FAST, epochs=1)), "cpu")
        states.append(load_checkpoint(result.model_path).model_state)
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_cancel_before_first_epoch_writes_nothing(scene, tmp_path):
    src, labels = scene
    with pytest.raises(CanceledError):
        train_segmentation(src, labels, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu",
                           RecordingFeedback(cancel_after=1))
    assert os.listdir(tmp_path) == []


def test_cancel_later_keeps_best_model_so_far(scene, tmp_path):
    src, labels = scene
    fb = RecordingFeedback(cancel_after=3)  # 2 batches per epoch: cancels during epoch 2
    result = train_segmentation(src, labels, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu", fb)
    assert result.canceled and result.best_epoch == 1 and os.path.exists(result.model_path)
    assert any("keeping the best model" in w for w in fb.warnings)


def test_training_input_errors(scene, tmp_path):
    src, labels = scene
    from shapely.geometry import box

    far = LabelSet([box(0, 0, 10, 10)], [1])
    with pytest.raises(InputError, match="LABELS: no label polygon overlaps"):
        train_segmentation(src, far, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu")
    one = LabelSet([labels.geometries[0]], [1])
    with pytest.raises(InputError, match="LABELS: only 1 labelled object lies"):
        train_segmentation(src, one, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu")
    with pytest.raises(InputError, match="PATCH_SIZE: .*multiple of 32"):
        train_segmentation(src, labels, str(tmp_path / "m.satseg"), TrainConfig(**dict(FAST, patch_size=50)), "cpu")
    with pytest.raises(InputError, match="ARCHITECTURE|unknown|Unknown"):
        train_segmentation(src, labels, str(tmp_path / "m.satseg"),
                           TrainConfig(**dict(FAST, architecture="segformer9")), "cpu")
    assert os.listdir(tmp_path) == []


def test_segmentation_outputs_keep_the_grid(trained, scene, tmp_path):
    src = scene[0]
    result = segment_raster(src, [trained.model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                            InferenceConfig(tile_size=96, overlap=32, min_object_pixels=0), "cpu")
    with rasterio.open(src) as s, rasterio.open(result.probability_path) as p, rasterio.open(result.mask_path) as m:
        for out in (p, m):
            assert (out.transform, out.crs, out.width, out.height) == (s.transform, s.crs, s.width, s.height)
        prob, mask = p.read(1), m.read(1)
        assert p.nodata == PROB_NODATA and m.nodata == MASK_NODATA
        assert ((prob >= 0) & (prob <= 1)).all()
        np.testing.assert_array_equal(mask, (prob >= result.threshold).astype("uint8"))
        assert p.descriptions == ("building probability",)
    assert sorted(os.listdir(tmp_path)) == ["m.tif", "p.tif"]


def test_mask_drops_objects_smaller_than_the_models_minimum(trained, scene, tmp_path):
    """The model stores a minimum object size from its labels; the mask is the sieved threshold of the probability."""
    from satseg_plugin.core.vectorize import sieve_array

    minimum = load_checkpoint(trained.model_path, kind="segmentation").metadata.extra["min_object_pixels"]
    labels = scene[1]
    smallest = min(g.area for g in labels.geometries) / 0.25  # 0.5 m pixels
    assert 1 < minimum <= 0.25 * smallest + 1
    fb = RecordingFeedback()
    result = segment_raster(scene[0], [trained.model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                            InferenceConfig(tile_size=96, overlap=32), "cpu", fb)
    with rasterio.open(result.probability_path) as p, rasterio.open(result.mask_path) as m:
        raw = (p.read(1) >= result.threshold).astype("uint8")
        mask = m.read(1)
        assert m.overviews(1) or m.width < 512  # overviews (when the raster is large enough) are built after
    np.testing.assert_array_equal(mask, sieve_array(raw, minimum))
    assert result.positive_pixels == int((mask == 1).sum())
    assert any(f"objects under {minimum} pixels" in m for m in fb.infos)


@pytest.mark.parametrize("band", [64, 100])
def test_column_bands_give_the_same_outputs_as_one_sweep(trained, make_raster, tmp_path, monkeypatch, band):
    """Cutting the raster into column bands (bounded memory on wide rasters) changes no output pixel."""
    from shapely.geometry import box

    import satseg_plugin.pipelines.segmentation.segment as inference

    rng = np.random.default_rng(1)
    data = rng.integers(1, 255, (3, 90, 230), dtype="uint8")
    data[:, 40:50, 60:140] = 0  # nodata across band borders
    src = make_raster(data, nodata=0)
    with rasterio.open(src) as s:
        x0, y1 = s.transform * (7, 85)
        x1, y0 = s.transform * (223, 3)
        geom = box(*(s.transform * (20, 80)), *(s.transform * (200, 10)))
    cfg = InferenceConfig(tile_size=64, overlap=24, bounds=(x0, y1, x1, y0), mask=geom)
    whole = segment_raster(src, [trained.model_path], str(tmp_path / "p1.tif"), str(tmp_path / "m1.tif"), cfg, "cpu")
    monkeypatch.setattr(inference, "BAND_COLUMNS", band)
    banded = segment_raster(src, [trained.model_path], str(tmp_path / "p2.tif"), str(tmp_path / "m2.tif"), cfg, "cpu")
    assert len(column_bands(7, 216, band)) > 2
    read = {}
    for path in (whole.probability_path, banded.probability_path, whole.mask_path, banded.mask_path):
        with rasterio.open(path) as r:
            assert (r.transform, r.width, r.height) == (rasterio.open(src).window_transform(((3, 85), (7, 223))),
                                                        216, 82)
            read[path] = r.read(1)
    p1, p2 = read[whole.probability_path], read[banded.probability_path]
    # the model itself rounds differently when tiles are batched differently (float32: ~1e-7 to ~2e-6 depending on
    # the trained weights); the blend is the same
    np.testing.assert_allclose(p2, p1, rtol=0, atol=5e-6)
    np.testing.assert_array_equal(p2 == PROB_NODATA, p1 == PROB_NODATA)
    decided = np.abs(p1 - whole.threshold) > 1e-5
    np.testing.assert_array_equal(read[banded.mask_path][decided], read[whole.mask_path][decided])
    with rasterio.open(banded.mask_path) as m:
        values = m.read(1)
        assert (values == MASK_NODATA).any() and (values != MASK_NODATA).any()


def test_nodata_extent_and_rotated_grid(trained, make_raster, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 100, 130), dtype="uint8")
    data[:, 10:20, 10:40] = 0
    rotated = Affine.translation(500000, 5000000) * Affine.rotation(20) * Affine.scale(0.5, -0.5)
    src = make_raster(data, transform=rotated, nodata=0)
    result = segment_raster(src, [trained.model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                            InferenceConfig(tile_size=64), "cpu")
    with rasterio.open(result.probability_path) as p, rasterio.open(result.mask_path) as m:
        assert p.transform == rotated
        assert (p.read(1)[10:20, 10:40] == PROB_NODATA).all() and (m.read(1)[10:20, 10:40] == MASK_NODATA).all()
        assert (p.read(1)[30:, 50:] >= 0).all()
    # extent: pixels 32..96 x 16..48 of a north-up copy
    north = make_raster(data, name="n.tif", nodata=0)
    with rasterio.open(north) as s:
        x0, y0 = s.transform * (32, 16)
        x1, y1 = s.transform * (96, 48)
        expected_transform = s.window_transform(((16, 48), (32, 96)))
    result = segment_raster(north, [trained.model_path], str(tmp_path / "pe.tif"), str(tmp_path / "me.tif"),
                            InferenceConfig(tile_size=64, bounds=(x0, y1, x1, y0)), "cpu")
    with rasterio.open(result.probability_path) as p:
        assert (p.width, p.height, p.transform) == (64, 32, expected_transform)


def test_ensemble_weights_and_tta(trained, scene, tmp_path):
    src = scene[0]
    other = train_segmentation(src, scene[1], str(tmp_path / "other.satseg"),
                               TrainConfig(**dict(FAST, epochs=1, seed=9)), "cpu").model_path
    cfg = InferenceConfig(tile_size=128, overlap=32)
    single = segment_raster(src, [trained.model_path], str(tmp_path / "s.tif"), str(tmp_path / "sm.tif"), cfg, "cpu")
    weighted = segment_raster(src, [trained.model_path, other], str(tmp_path / "w.tif"), str(tmp_path / "wm.tif"),
                              InferenceConfig(tile_size=128, overlap=32, weights=(1.0, 0.0)), "cpu")
    mixed = segment_raster(src, [trained.model_path, other], str(tmp_path / "x.tif"), str(tmp_path / "xm.tif"),
                           InferenceConfig(tile_size=128, overlap=32, weights=(0.5, 0.5)), "cpu")
    tta = segment_raster(src, [trained.model_path], str(tmp_path / "t.tif"), str(tmp_path / "tm.tif"),
                         InferenceConfig(tile_size=128, overlap=32, tta=True), "cpu")
    def read(result):
        return rasterio.open(result.probability_path).read(1)

    np.testing.assert_allclose(read(weighted), read(single), atol=1e-6)
    assert not np.allclose(read(mixed), read(single), atol=1e-4)
    assert not np.allclose(read(tta), read(single), atol=1e-4)
    with pytest.raises(InputError, match="WEIGHTS"):
        segment_raster(src, [trained.model_path], str(tmp_path / "e.tif"), str(tmp_path / "em.tif"),
                       InferenceConfig(weights=(1.0, 2.0)), "cpu")


def test_inference_input_errors(trained, make_raster, tmp_path):
    two_bands = make_raster(np.ones((2, 64, 64), "uint8"))
    with pytest.raises(InputError, match="INPUT: the model reads bands"):
        segment_raster(two_bands, [trained.model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"))
    with pytest.raises(OutputError, match="OUTPUT_PROBABILITY"):
        segment_raster(two_bands, [trained.model_path], str(tmp_path / "p.vrt"), str(tmp_path / "m.tif"))
    bogus = tmp_path / "bogus.satseg"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(Exception, match="bogus.satseg"):
        segment_raster(two_bands, [str(bogus)], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"))
    assert sorted(os.listdir(tmp_path)) == ["bogus.satseg", "in.tif"]


def test_cancel_mid_inference_leaves_previous_outputs(trained, scene, tmp_path):
    src = scene[0]
    prob, mask = str(tmp_path / "p.tif"), str(tmp_path / "m.tif")
    segment_raster(src, [trained.model_path], prob, mask, InferenceConfig(tile_size=64), "cpu")
    before = (os.path.getmtime(prob), os.path.getsize(prob))
    with pytest.raises(CanceledError):
        segment_raster(src, [trained.model_path], prob, mask, InferenceConfig(tile_size=64), "cpu",
                       RecordingFeedback(cancel_after=2))
    assert (os.path.getmtime(prob), os.path.getsize(prob)) == before
    assert sorted(os.listdir(tmp_path)) == ["m.tif", "p.tif"]


def test_cuda_out_of_memory_retries_with_smaller_batches(trained, scene, tmp_path, monkeypatch):
    """The OOM path, simulated on the CPU: batches above 2 tiles 'run out of memory'."""
    from satseg_plugin.pipelines.segmentation.ensemble import Ensemble

    real = Ensemble.predict
    sizes = []

    def flaky(self, raw, tta, on_device=False):
        sizes.append(len(raw))
        if len(raw) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(self, raw, tta, on_device)

    monkeypatch.setattr(Ensemble, "predict", flaky)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    fb = RecordingFeedback()
    segment_raster(scene[0], [trained.model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                   InferenceConfig(tile_size=64, overlap=0, batch_size=8), "cpu", fb)
    assert sizes[:3] == [4, 4, 2] and max(sizes[3:]) <= 2  # 8 -> 4 (a row has 4 tiles) -> 2
    assert any("out of memory" in w for w in fb.warnings)
    monkeypatch.setattr(Ensemble, "predict", lambda self, raw, tta, on_device=False: (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("simulated")))
    with pytest.raises(Exception, match="one tile per batch"):
        segment_raster(scene[0], [trained.model_path], str(tmp_path / "p2.tif"), str(tmp_path / "m2.tif"),
                       InferenceConfig(tile_size=64, batch_size=1), "cpu")
    assert not os.path.exists(tmp_path / "p2.tif")


def test_pixel_size_mismatch_warns(trained, make_raster, tmp_path):
    coarse = make_raster(np.full((3, 64, 64), 100, "uint8"), transform=Affine(2.0, 0, 500000, 0, -2.0, 5000000))
    fb = RecordingFeedback()
    segment_raster(coarse, [trained.model_path], str(tmp_path / "p.tif"), str(tmp_path / "m.tif"),
                   InferenceConfig(tile_size=64), "cpu", fb)
    assert any("differ from those the model was trained on" in w for w in fb.warnings)


@pytest.mark.parametrize("asked, why", [(224, "fewer than two blocks"), (320, "raster is smaller than one crop")])
def test_small_labelled_area_lowers_the_patch_size(scene, tmp_path, asked, why):
    """A 256 px scene holds one block of 224 px (the default) or none of 320 px: training lowers the crops to the
    largest size that leaves two labelled blocks (96 px) and says so, instead of refusing."""
    src, labels = scene
    fb = RecordingFeedback()
    result = train_segmentation(src, labels, str(tmp_path / "m.satseg"), TrainConfig(**dict(FAST, patch_size=asked)),
                                "cpu", fb)
    assert load_checkpoint(result.model_path, kind="segmentation").metadata.patch_size == 96
    assert any(w.startswith(f"PATCH_SIZE lowered from {asked} to 96 px") and why in w for w in fb.warnings), fb.warnings
    assert any("Spatial split:" in m and "~96 px" in m for m in fb.infos)


def test_raster_smaller_than_the_smallest_crop_is_refused(scene, tmp_path):
    src, labels = scene
    small = str(tmp_path / "small.tif")
    with rasterio.open(src) as ds:
        profile = dict(ds.profile, width=48, height=48, transform=ds.transform, tiled=False)
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(small, "w", **profile) as out:
            out.write(ds.read(window=((0, 48), (0, 48))))
    with pytest.raises(InputError, match=r"INPUT: the raster \(48x48\) is smaller than one 64 px training crop"):
        train_segmentation(small, labels, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu")
    assert not os.path.exists(tmp_path / "m.satseg")


def test_labels_over_masked_pixels_are_not_learned(scene, tmp_path):
    """Pixels a mask band hides (transparent in QGIS; no nodata value) are ignored by the loss, like nodata:
    with every labelled pixel hidden, training has nothing to validate on and says so."""
    src, labels = scene
    masked = str(tmp_path / "masked.tif")
    with rasterio.open(src) as ds:
        profile = dict(ds.profile, nodata=None)
        hidden = np.full((ds.height, ds.width), 255, "uint8")
        hidden[rasterio.features.geometry_mask(labels.geometries, (ds.height, ds.width), ds.transform,
                                               invert=True)] = 0
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(masked, "w", **profile) as out:
            out.write(ds.read())
            out.write_mask(hidden)
    with pytest.raises(InputError, match="LABELS: the validation blocks hold no labelled pixels"):
        train_segmentation(masked, labels, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu")
    assert not os.path.exists(tmp_path / "m.satseg")


def test_an_rgba_raster_trains_on_its_colours(scene, tmp_path):
    """An RGBA orthophoto: the model reads bands 1-3 (alpha is transparency, said in the log) and the
    statistics leave the transparent strip out."""
    src, labels = scene
    rgba = str(tmp_path / "rgba.tif")
    with rasterio.open(src) as ds:
        data = ds.read()
        data[:, :, :32] = 0  # a transparent black collar
        alpha = np.full((ds.height, ds.width), 255, "uint8")
        alpha[:, :32] = 0
        with rasterio.open(rgba, "w", driver="GTiff", width=ds.width, height=ds.height, count=4, dtype="uint8",
                           crs=ds.crs, transform=ds.transform, photometric="RGB", alpha="YES") as out:
            out.write(data, [1, 2, 3])
            out.write(alpha, 4)
        colours = ds.read()[:, :, 32:].reshape(3, -1).astype(float)
    fb = RecordingFeedback()
    result = train_segmentation(rgba, labels, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu", fb)
    meta = load_checkpoint(result.model_path, kind="segmentation").metadata
    assert meta.bands == [1, 2, 3] and any("Band(s) 4 (alpha) left out" in m for m in fb.infos)
    np.testing.assert_allclose(meta.mean, colours.mean(axis=1), rtol=1e-6)


def test_aoi_without_labels_is_refused(scene, tmp_path):
    from shapely.geometry import box

    src, labels = scene
    with rasterio.open(src) as ds:
        corner = box(ds.bounds.left, ds.bounds.top - 1.0, ds.bounds.left + 1.0, ds.bounds.top)
    empty_aoi = LabelSet(labels.geometries, labels.classes, aoi=corner.difference(
        corner.intersection(__import__("shapely").union_all(labels.geometries))))
    with pytest.raises(InputError, match="AOI: no label polygon lies inside"):
        train_segmentation(src, empty_aoi, str(tmp_path / "m.satseg"), TrainConfig(**FAST), "cpu")
    assert os.listdir(tmp_path) == []


def test_split_blocks_holds_out_labelled_blocks_only():
    from satseg_plugin.pipelines.segmentation.train import split_blocks

    positive = [False, True, True, False, True, False, False, True, False, False]
    train, val = split_blocks(positive, 0.2, np.random.default_rng(0), 128)
    assert len(val) == 2 and all(positive[i] for i in val)
    assert sorted(train + val) == list(range(10)) and any(positive[i] for i in train)
    assert (train, val) == split_blocks(positive, 0.2, np.random.default_rng(0), 128)
    # never all labelled blocks: one stays for training
    train, val = split_blocks([True, True], 0.9, np.random.default_rng(1), 128)
    assert len(val) == 1 and len(train) == 1
    with pytest.raises(InputError, match="LABELS: labelled objects lie in 1 block"):
        split_blocks([False, True, False], 0.2, np.random.default_rng(0), 128)


def test_aoi_limits_training_blocks(scene, tmp_path):
    import re

    from shapely.geometry import box

    src, labels = scene
    with rasterio.open(src) as ds:
        b = ds.bounds
    midx, midy = (b.left + b.right) / 2, (b.bottom + b.top) / 2
    # all but the top-left quadrant: 3 of the 4 blocks of 128 px
    aoi = box(*b).difference(box(b.left, midy, midx, b.top))
    fb = RecordingFeedback()
    train_segmentation(src, LabelSet(labels.geometries, labels.classes, aoi=aoi), str(tmp_path / "m.satseg"),
                       TrainConfig(**dict(FAST, epochs=1, block_size=128)), "cpu", fb)
    split = [m for m in fb.infos if m.startswith("Spatial split")][0]
    n_train, n_val = map(int, re.search(r"(\d+) training and (\d+) validation", split).groups())
    assert (n_train + n_val, n_val) == (3, 1)
