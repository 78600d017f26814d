"""DeepCluster over scene patches: the silhouette table and plot, the safetensors features file, strict loading
of the scene model (features equal the pretrained model's), fresh final features, reproducible cluster ids with
the right offsets, staged copies with unique names, cancel, and every refusal naming its parameter."""

import csv
import json
import os
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("faiss")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from satseg_plugin.core.errors import CanceledError, CheckpointError, InputError, OutputError
from satseg_plugin.core.kmeans import kmeans
from satseg_plugin.core.progress import RecordingFeedback
from satseg_plugin.core.scores import nmi, silhouette
from satseg_plugin.models.checkpoint import ModelMetadata, model_tensors, save_checkpoint
from satseg_plugin.models.nets.scene import build_scene_model, features
from satseg_plugin.pipelines.clustering.scene.data import load_patches
from satseg_plugin.pipelines.clustering.scene.deepcluster import (
    DeepClusterConfig,
    cluster_space,
    copy_cluster_patches,
    deep_cluster,
    extract_clusters,
)
from tests.unit.pipelines.clustering.test_scene_data import write_scene_patches

GROUPS = ["urban"] * 12 + ["rural"] * 12 + ["uninhabited"] * 6
VARIANTS = [i % 2 for i in range(len(GROUPS))]  # two looks per group: grey / orange towns, green / yellow fields
URBAN, RURAL = np.arange(12), np.arange(12, 24)
TINY = DeepClusterConfig(k=4, epochs=1, pca_dim=4, k_min=2, k_max=5, batch_size=6, kmeans_iterations=10, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The patches and a scene model (random weights stand in for a pretrained one: only loading matters)."""
    folder = tmp_path_factory.mktemp("dc")
    paths = write_scene_patches(str(folder / "patches"), GROUPS, size=32, seed=2, variants=VARIANTS)
    stack = load_patches(paths)
    torch.manual_seed(5)
    model = build_scene_model(3, 3)
    with torch.no_grad():  # non-trivial batch-norm statistics, so a model loaded without them would differ
        model.train()
        model(torch.from_numpy(stack.normalized()))
    model.eval()
    meta = ModelMetadata(kind="scene", architecture="resnet18", encoder="torchvision", in_channels=3,
                         classes=["urban", "rural", "uninhabited"], bands=[1, 2, 3], mean=stack.mean.tolist(),
                         std=stack.std.tolist(), patch_size=32, pixel_size=(0.5, 0.5))
    model_path = str(folder / "scene.satseg")
    save_checkpoint(model_path, model_tensors(model), meta)
    with torch.no_grad():
        pretrained = features(model, torch.from_numpy(stack.normalized())).numpy()
    return {"folder": folder, "paths": paths, "model_path": model_path, "meta": meta, "model": model,
            "pretrained": pretrained}


@pytest.fixture(scope="module")
def clustered(data):
    out = data["folder"] / "out"
    feedback = RecordingFeedback()
    result = deep_cluster(data["paths"], GROUPS, ("urban", "rural"), data["model_path"],
                          str(out / "features.safetensors"), TINY, device="cpu", feedback=feedback,
                          table_path=str(out / "silhouette.csv"), plot_path=str(out / "silhouette.png"),
                          report_path=str(out / "silhouette.html"))
    return result, feedback


def test_silhouette_table_plot_and_suggestion(clustered):
    result, feedback = clustered
    assert [(r["group"], r["k"]) for r in result.rows] == [(g, k) for g in ("urban", "rural") for k in range(2, 6)]
    for row in result.rows:
        assert -1.0 <= row["silhouette"] <= 1.0 and row["inertia"] > 0
    for group in ("urban", "rural"):
        mine = [r for r in result.rows if r["group"] == group]
        assert result.suggested[group] == max(mine, key=lambda r: r["silhouette"])["k"]
    assert result.counts == {"urban": 12, "rural": 12}
    with open(result.table_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["group", "k", "silhouette", "inertia"] and len(rows) == 8
    assert [float(r["silhouette"]) for r in rows] == pytest.approx([r["silhouette"] for r in result.rows])
    with open(result.plot_path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(result.report_path, encoding="utf-8") as handle:  # the page QGIS's Results Viewer shows
        page = handle.read()
    assert page.count("<tr><td>") == 8 and page.count("peak") == 2 and "silhouette.png" in page
    assert sorted(os.listdir(os.path.dirname(result.report_path))) == [
        "features.safetensors", "silhouette.csv", "silhouette.html", "silhouette.png"]  # nothing staged left
    assert [(h["group"], h["epoch"]) for h in result.history] == [("urban", 1), ("rural", 1)]
    assert feedback.progress[-1] == 100.0


def test_features_file(clustered, data):
    result, _ = clustered
    arrays = safetensors_numpy.load_file(result.features_path)
    assert set(arrays) == {"features", "index"}
    assert arrays["features"].shape == (24, 512) and arrays["features"].dtype == np.float32
    np.testing.assert_array_equal(arrays["index"], np.r_[URBAN, RURAL])
    assert arrays["index"].dtype == np.int64
    from safetensors import safe_open
    with safe_open(result.features_path, framework="numpy") as handle:
        meta = handle.metadata()
    assert meta["satseg"] == "deepcluster-features"
    assert json.loads(meta["groups"]) == ["urban"] * 12 + ["rural"] * 12
    assert json.loads(meta["patch_groups"]) == GROUPS and meta["pca_dim"] == "4"


def test_silhouettes_come_from_the_final_networks(clustered, data):
    """The table is computed on the saved features, and those are not the starting network's: with one epoch,
    features taken before the last epoch (the original's stale features) would equal the pretrained ones."""
    result, _ = clustered
    feats = safetensors_numpy.load_file(result.features_path)["features"]
    for group, rows in (("urban", slice(0, 12)), ("rural", slice(12, 24))):
        assert not np.allclose(feats[rows], data["pretrained"][rows], atol=1e-3)
        space = cluster_space(feats[rows], TINY.pca_dim)
        for k in range(TINY.k_min, TINY.k_max + 1):
            labels = kmeans(space, k, niter=TINY.kmeans_iterations, seed=TINY.seed).assignments
            expected = next(r["silhouette"] for r in result.rows if r["group"] == group and r["k"] == k)
            assert silhouette(space, labels) == pytest.approx(expected, abs=1e-9)


def test_pretrained_backbone_is_loaded_strictly(data, tmp_path):
    """Without training, the features file holds exactly the pretrained model's features."""
    path = str(tmp_path / "f0.safetensors")
    deep_cluster(data["paths"], GROUPS, None, data["model_path"], path, replace(TINY, epochs=0), device="cpu")
    feats = safetensors_numpy.load_file(path)["features"]
    np.testing.assert_allclose(feats, data["pretrained"][:24], atol=1e-5)

    tensors = model_tensors(data["model"])
    del tensors["model.layer2.0.bn1.running_var"]  # one backbone buffer missing: refused, not skipped
    save_checkpoint(str(tmp_path / "broken.satseg"), tensors, data["meta"])
    with pytest.raises(CheckpointError):
        deep_cluster(data["paths"], GROUPS, None, str(tmp_path / "broken.satseg"), path, TINY, device="cpu")
    other_kind = replace(data["meta"], kind="clusternet")
    save_checkpoint(str(tmp_path / "seg.satseg"), model_tensors(data["model"]), other_kind)
    with pytest.raises(CheckpointError):  # not a scene model
        deep_cluster(data["paths"], GROUPS, None, str(tmp_path / "seg.satseg"), path, TINY, device="cpu")


def test_extract_clusters_ids_and_reproducibility(clustered):
    result, _ = clustered
    first = extract_clusters(result.features_path, city_k=2, rural_k=3, seed=0)
    second = extract_clusters(result.features_path, city_k=2, rural_k=3, seed=0)
    np.testing.assert_array_equal(first.clusters, second.clusters)
    np.testing.assert_array_equal(first.distances, second.distances)
    np.testing.assert_array_equal(first.index, np.arange(30))
    assert first.groups == GROUPS and first.other_id == 6
    assert set(first.clusters[URBAN]) <= {1, 2} and set(first.clusters[RURAL]) <= {3, 4, 5}
    assert (first.clusters[24:] == 6).all() and np.isnan(first.distances[24:]).all()
    assert (first.distances[:24] >= 0).all() and np.isfinite(first.distances[:24]).all()
    sizes = first.sizes
    assert sum(sizes.values()) == 30 and sizes[6] == 6
    assert sizes[1] >= sizes[2] and sizes[3] >= sizes[4] >= sizes[5]  # ids ordered by size
    np.testing.assert_array_equal(first.per_patch(30), first.clusters)
    # the two looks of each group are found again
    assert nmi(first.clusters[URBAN], np.asarray(VARIANTS)[URBAN]) > 0.5
    # the same clustering the silhouette table scored (same space, seed and iterations), renumbered
    feats = safetensors_numpy.load_file(result.features_path)["features"][:12]
    scored = kmeans(cluster_space(feats, TINY.pca_dim), 2, niter=TINY.kmeans_iterations, seed=0).assignments
    assert nmi(first.clusters[URBAN], scored) == pytest.approx(1.0)


@pytest.mark.parametrize("city_k, rural_k, parameter", [(0, 2, "CITY_K"), (13, 2, "CITY_K"), (2, 0, "RURAL_K"),
                                                        (2, 13, "RURAL_K")])
def test_extract_refuses_bad_numbers_of_clusters(clustered, city_k, rural_k, parameter):
    with pytest.raises(InputError) as err:
        extract_clusters(clustered[0].features_path, city_k, rural_k)
    assert err.value.parameter == parameter


def test_extract_refuses_other_files(data, tmp_path):
    for path in (data["model_path"], str(tmp_path / "missing.safetensors")):
        with pytest.raises(InputError) as err:
            extract_clusters(path, 2, 2)
        assert err.value.parameter == "FEATURES"


def test_copy_cluster_patches_unique_names_and_staging(data, tmp_path):
    # two "years" whose patch files have the same names
    year1 = write_scene_patches(str(tmp_path / "2019"), ["urban", "rural"], size=8)
    year2 = write_scene_patches(str(tmp_path / "2020"), ["urban", "rural"], size=8)
    paths = year1 + year2
    out = tmp_path / "clusters"
    copied = copy_cluster_patches(paths, [1, 2, 1, 0], str(out))
    assert sorted(copied) == [1, 2]
    assert sorted(os.listdir(out / "cluster_1")) == ["0_patch_000.tif", "2_patch_000.tif"]
    assert os.listdir(out / "cluster_2") == ["1_patch_001.tif"]
    with open(paths[2], "rb") as a, open(out / "cluster_1" / "2_patch_000.tif", "rb") as b:
        assert a.read() == b.read()
    manifest = json.loads((out / "satseg_manifest.json").read_text())
    assert manifest["clusters"] == {"1": 2, "2": 1} and len(manifest["files"]) == 3

    with pytest.raises(OutputError):  # an earlier output is kept unless OVERWRITE
        copy_cluster_patches(paths, [3, 3, 3, 3], str(out))
    copy_cluster_patches(paths, [3, 3, 3, 3], str(out), overwrite=True)
    assert sorted(os.listdir(out)) == ["cluster_3", "satseg_manifest.json"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):  # never replaces a folder SatSeg did not write
        copy_cluster_patches(paths, [1, 1, 1, 1], str(foreign), overwrite=True)
    assert os.listdir(foreign) == ["notes.txt"]
    with pytest.raises(CanceledError):
        copy_cluster_patches(paths, [1, 1, 1, 1], str(tmp_path / "canceled"), feedback=RecordingFeedback(2))
    assert not os.path.exists(tmp_path / "canceled")
    assert [p for p in os.listdir(tmp_path) if p.startswith(".satseg-tmp")] == []
    with pytest.raises(InputError) as err:
        copy_cluster_patches(paths, [1, 2], str(tmp_path / "x"))
    assert err.value.parameter == "CLUSTERS"


@pytest.mark.parametrize("change, parameter", [
    ({"k_max": 1}, "K_MAX"),                   # below K_MIN
    ({"k_max": 12}, "K_MAX"),                  # not below the 12 patches of a group
    ({"k_min": 1}, "K_MIN"),
    ({"k": 1}, "K"),
    ({"sample": 3}, "SAMPLE"),
    ({"batch_size": 1}, "BATCH_SIZE"),
])
def test_settings_errors(data, tmp_path, change, parameter):
    with pytest.raises(InputError) as err:
        deep_cluster(data["paths"], GROUPS, None, data["model_path"], str(tmp_path / "f.safetensors"),
                     replace(TINY, **change), device="cpu")
    assert err.value.parameter == parameter
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("groups, cluster_groups", [
    (GROUPS, ("urban", "suburban")),           # a group without patches
    (GROUPS[:-1], ("urban", "rural")),         # not one group per patch
    (GROUPS, ("urban", "urban")),
])
def test_group_errors(data, tmp_path, groups, cluster_groups):
    with pytest.raises(InputError) as err:
        deep_cluster(data["paths"], groups, cluster_groups, data["model_path"], str(tmp_path / "f.safetensors"),
                     TINY, device="cpu")
    assert err.value.parameter == "GROUPS"


@pytest.mark.parametrize("when", ["training", "silhouette"])
def test_cancel_writes_nothing(clustered, data, tmp_path, when):
    total = len(clustered[1].progress)
    # one report per clustered patch read, one per training batch, one per scored (group, k): cancel at the
    # first batch, or before the last k
    cancel_after = 24 + 1 if when == "training" else total - 2
    feedback = RecordingFeedback(cancel_after=cancel_after)
    with pytest.raises(CanceledError):
        deep_cluster(data["paths"], GROUPS, None, data["model_path"], str(tmp_path / "f.safetensors"), TINY,
                     device="cpu", feedback=feedback, table_path=str(tmp_path / "t.csv"),
                     plot_path=str(tmp_path / "p.png"))
    assert os.listdir(tmp_path) == []
    trained = [line for line in feedback.infos if "epoch 1/1" in line]
    assert len(trained) == (0 if when == "training" else 2)
    assert not any("highest silhouette" in line for line in feedback.infos)
