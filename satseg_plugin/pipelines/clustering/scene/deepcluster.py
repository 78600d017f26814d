"""DeepCluster over scene patches (siCluster's second stage): cluster urban and rural patches separately.

Starting from a scene classifier (:func:`.scene_training.pretrain_scene`), each group of patches ("urban",
"rural") gets its own copy of the network. Every epoch: eval-mode features of all the group's patches, PCA
whitening and L2 normalisation, faiss k-means into ``k`` pseudo-classes, a new (re-initialised) head with
``k`` outputs, and one pass of training of backbone and head on the pseudo-labels (Caron et al., 2018).
Afterwards fresh features of every patch come from the final networks; for each candidate number of
clusters the silhouette tells how well separated the clusters are, so a person can choose the number per
group. :func:`extract_clusters` then clusters the stored features with the chosen numbers and gives every
patch a cluster id; :func:`copy_cluster_patches` sorts the patch files into one folder per cluster.

Faults of the original fixed here: the pretrained model is loaded strictly (the original's checkpoint was
silently never loaded), the new head is in the optimiser, the silhouettes are computed on the final
network's features (not on features from before the last epoch), and cluster ids are reproducible (seeded
k-means, clusters ordered by size then position, not by faiss's internal order).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ....core.deps import require
from ....core.errors import InputError
from ....core.fit import OomBackoff, Precision, choose_precision, seed_everything, split_batches
from ....core.kmeans import Whitening, kmeans, l2_normalize
from ....core.plots import new_figure, save_figure
from ....core.progress import Feedback, NullFeedback, SubFeedback, check_canceled, track
from ....core.scores import nmi, silhouette
from ....core.staging import StagedDirectory, StagedFile, Transaction, stages_outputs, write_csv_rows
from .config import DeepClusterConfig
from .data import load_patches
from .train import augment_scenes

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["FEATURES_MARKER", "DeepClusterConfig", "DeepClusterResult", "ExtractResult", "deep_cluster",
           "cluster_space", "extract_clusters", "copy_cluster_patches"]

#: Value of the ``"satseg"`` metadata entry of a DeepCluster features file.
FEATURES_MARKER = "deepcluster-features"

#: Largest whitened dimension (the ResNet-18 feature size).
_FEATURE_DIM = 512


@dataclass
class DeepClusterResult:
    """What :func:`deep_cluster` wrote and found.

    Attributes:
        features_path: the safetensors features file (input of :func:`extract_clusters`).
        table_path: the silhouette CSV (``group,k,silhouette,inertia``), if asked for.
        plot_path: the silhouette-vs-k PNG, if asked for.
        rows: one dict per (group, k): ``group``, ``k``, ``silhouette``, ``inertia``.
        suggested: ``{group: k}`` with the highest silhouette (the smallest such k on ties).
        counts: ``{group: number of patches}`` of the clustered groups.
        history: one dict per group and epoch: ``group``, ``epoch``, ``objective``, ``nmi_previous``,
            ``loss``, ``clusters_used``.
        report_path: the HTML page with the plot and the table, if asked for.
    """

    features_path: str
    table_path: Optional[str]
    plot_path: Optional[str]
    rows: List[Dict[str, Any]]
    suggested: Dict[str, int]
    counts: Dict[str, int]
    history: List[Dict[str, Any]] = field(default_factory=list)
    report_path: Optional[str] = None


@dataclass
class ExtractResult:
    """Cluster ids of the patches (:func:`extract_clusters`).

    Attributes:
        index: ``(n,)`` int64 patch positions (into the ``patch_paths`` given to :func:`deep_cluster`).
        groups: the group of each row.
        clusters: ``(n,)`` int64 cluster id: first group ``1..CITY_K``, second ``CITY_K+1..CITY_K+RURAL_K``,
            every other group :attr:`other_id`.
        distances: ``(n,)`` float32 Euclidean distance to the cluster centre in the whitened, normalised
            feature space (NaN for :attr:`other_id`).
        other_id: the single id of patches outside the clustered groups (``CITY_K + RURAL_K + 1``), e.g.
            "uninhabited".
        sizes: ``{cluster id: patch count}``.
    """

    index: np.ndarray
    groups: List[str]
    clusters: np.ndarray
    distances: np.ndarray
    other_id: int
    sizes: Dict[int, int]

    def per_patch(self, count: int) -> np.ndarray:
        """``(count,)`` int64 cluster id at each patch position (0 where a position has no row)."""
        out = np.zeros(int(count), np.int64)
        out[self.index] = self.clusters
        return out


def cluster_space(features: np.ndarray, pca_dim: int) -> np.ndarray:
    """Whiten ``(n, d)`` features to ``min(pca_dim, n - 1, d, 512)`` dimensions and L2-normalise each row.

    The same features always give the same output (the whitening is deterministic), so
    :func:`extract_clusters` rebuilds the space :func:`deep_cluster` scored.
    """
    n, d = features.shape
    dim = max(1, min(int(pca_dim), n - 1, d, _FEATURE_DIM))
    return l2_normalize(Whitening.fit(features, dim).apply(features))


def _features(model: "torch.nn.Module", images: np.ndarray, device: "torch.device", batch_size: int,
              feedback: Feedback) -> np.ndarray:
    """Eval-mode backbone features ``(n, 512)`` float32."""
    torch = require("torch")
    from ....models.nets.scene import features

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            check_canceled(feedback)
            x = torch.from_numpy(images[start:start + batch_size]).to(device)
            out.append(features(model, x).float().cpu().numpy())
    return np.ascontiguousarray(np.concatenate(out), np.float32)


def _train_epoch(model: "torch.nn.Module", images: np.ndarray, targets: np.ndarray, k: int,
                 config: DeepClusterConfig, device: "torch.device", precision: Precision, backoff: OomBackoff,
                 rng: np.random.Generator, generator: "torch.Generator", feedback: Feedback) -> float:
    """Reset the head to ``k`` outputs and train backbone and head one pass on the pseudo-labels."""
    torch = require("torch")
    model.fc = torch.nn.Linear(model.fc.in_features, k).to(device)  # new head, fresh initialisation
    counts = np.bincount(targets, minlength=k).astype(np.float64)
    weights = np.zeros(k)
    present = counts > 0
    weights[present] = counts[present].sum() / (present.sum() * counts[present])  # no cluster dominates
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32, device=device))
    # backbone and the new head in one optimiser (the original trained a head it never optimised)
    optimizer = torch.optim.RAdam(model.parameters(), lr=config.learning_rate)
    model.train()

    def step(batch: np.ndarray) -> "torch.Tensor":
        x = augment_scenes(torch.from_numpy(images[batch]).to(device), generator, radiometric=False)
        with precision.autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), torch.from_numpy(targets[batch]).to(device))
        precision.step(loss, optimizer)
        return loss.detach()

    batches = split_batches(rng.permutation(len(images)), backoff.batch_size)
    losses = []  # on the device: read back once per pass, not once per batch
    for i, batch in enumerate(batches):
        check_canceled(feedback)
        losses += backoff.run_batch(batch, step)
        feedback.set_progress(100.0 * (i + 1) / len(batches))
    return float(torch.stack(losses).double().mean())


def _write_features(path: str, features: np.ndarray, index: np.ndarray, row_groups: List[str],
                    patch_groups: List[str], metadata: Dict[str, str]) -> str:
    numpy_io = require("safetensors.numpy")
    header = {"satseg": FEATURES_MARKER, "groups": json.dumps(row_groups), "patch_groups": json.dumps(patch_groups),
              **metadata}
    staged = StagedFile(path, parameter="OUTPUT_FEATURES", suffix=".safetensors")
    with staged as tmp:
        numpy_io.save_file({"features": np.ascontiguousarray(features, np.float32),
                            "index": np.ascontiguousarray(index, np.int64)}, tmp, metadata=header)
        staged.commit()
    return os.path.abspath(path)


def _write_table(path: str, rows: List[Dict[str, Any]]) -> str:
    return write_csv_rows(path, rows, "OUTPUT_TABLE", ("group", "k", "silhouette", "inertia"))


def _write_plot(path: str, rows: List[Dict[str, Any]], suggested: Dict[str, int]) -> str:
    from matplotlib.ticker import MaxNLocator

    figure = new_figure()
    axes = figure.add_subplot(1, 1, 1)
    for group in dict.fromkeys(row["group"] for row in rows):
        mine = [row for row in rows if row["group"] == group]
        line, = axes.plot([r["k"] for r in mine], [r["silhouette"] for r in mine], marker="o", label=group)
        best = suggested.get(group)
        if best is not None:
            peak = next(r["silhouette"] for r in mine if r["k"] == best)
            axes.plot([best], [peak], marker="*", markersize=16, color=line.get_color(), linestyle="none")
            axes.annotate(f"k = {best}", (best, peak), textcoords="offset points", xytext=(6, 8),
                          color=line.get_color())
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.margins(y=0.15)  # room for the peak labels
    axes.set_xlabel("number of clusters k")
    axes.set_ylabel("mean silhouette")
    axes.set_title("SatSeg DeepCluster: silhouette per number of clusters")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return save_figure(figure, path, "OUTPUT_PLOT")


def _write_report(path: str, rows: List[Dict[str, Any]], suggested: Dict[str, Optional[int]],
                  plot_path: Optional[str]) -> str:
    """An HTML page with the silhouette plot and table (QGIS shows it in its Processing Results Viewer)."""
    import html
    import pathlib

    body = "".join(f"<tr><td>{html.escape(str(r['group']))}</td><td>{r['k']}</td><td>{r['silhouette']:.4f}</td>"
                   f"<td>{r['inertia']:.4g}</td>"
                   f"<td>{'&#9664; peak' if suggested.get(r['group']) == r['k'] else ''}</td></tr>" for r in rows)
    image = f'<p><img src="{pathlib.Path(plot_path).resolve().as_uri()}" width="640"></p>' if plot_path else ""
    text = ("<html><head><meta charset='utf-8'><title>Silhouette per k</title></head><body>"
            "<h2>DeepCluster: silhouette per k</h2>" + image +
            "<table border='1' cellpadding='3'><tr><th>group</th><th>k</th><th>silhouette</th><th>inertia</th>"
            f"<th></th></tr>{body}</table></body></html>")
    staged = StagedFile(path, parameter="OUTPUT_REPORT", suffix=".html")
    with staged as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        staged.commit()
    return os.path.abspath(path)


def _suggest(rows: List[Dict[str, Any]], group: str) -> Optional[int]:
    scored = [(row["silhouette"], -row["k"]) for row in rows if row["group"] == group
              and not math.isnan(row["silhouette"])]
    return -max(scored)[1] if scored else None


@stages_outputs
def deep_cluster(patch_paths: Sequence[str], groups: Sequence[str], cluster_groups: Optional[Sequence[str]],
                 model_path: str, features_path: str, config: DeepClusterConfig = DeepClusterConfig(),
                 device: str = "auto", feedback: Optional[Feedback] = None, table_path: Optional[str] = None,
                 plot_path: Optional[str] = None, report_path: Optional[str] = None,
                 transaction: Optional[Transaction] = None) -> DeepClusterResult:
    """Train one DeepCluster network per group from a scene model and score numbers of clusters.

    Cost per group and epoch: one forward pass over the group's patches, a k-means, one training pass;
    then one more forward pass and, per scored k, a k-means and an O(n^2) silhouette (use ``sample`` for
    tens of thousands of patches).

    Args:
        patch_paths: the patch files (same size and bands as the scene model's).
        groups: the group of each patch (e.g. the scene model's predicted class: "urban", "rural",
            "uninhabited").
        cluster_groups: the groups to cluster, each on its own copy of the network (None: ``("urban",
            "rural")``); patches of other groups are not read.
        model_path: a scene model from :func:`.scene_training.pretrain_scene`; its backbone is loaded strictly
            and its mean/std normalise the patches.
        features_path: the safetensors file to write: ``features`` ``(n, 512)`` float32 from the final
            network of each row's group, ``index`` ``(n,)`` int64 positions in ``patch_paths``, and metadata
            ``satseg`` (``"deepcluster-features"``), ``groups`` (JSON list, one per row), ``patch_groups``
            (JSON list, one per patch), ``pca_dim``, ``cluster_groups``, ``model``.
        config: settings.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        feedback: progress and cancel (checked at every batch, epoch and scored k).
        table_path: CSV ``group,k,silhouette,inertia``.
        plot_path: PNG of the silhouette against k, one line per group, each peak marked.
        report_path: HTML page with the plot and the table.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).

    Returns:
        The :class:`DeepClusterResult`.

    Raises:
        InputError: bad settings; ``groups`` not one per patch, a repeated or empty clustered group
            (``GROUPS``); ``K_MAX`` not below a group's patch count (``K_MAX``); patches that do not fit the
            model (``PATCH_INDEX``).
        CheckpointError: the model file is missing, not a scene model, or its weights do not fit.
        CanceledError: when the user cancels; nothing is written.
    """
    from ....core.device import describe_device, resolve_device
    from ....core.version import __version__
    from ....models.checkpoint import load_checkpoint
    from ....models.nets.scene import scene_model_from_checkpoint

    feedback = feedback or NullFeedback()
    config.validate()
    paths = [str(p) for p in patch_paths]
    labels = [str(g) for g in groups]
    if len(labels) != len(paths):
        raise InputError(f"{len(labels)} group values for {len(paths)} patches; give one group per patch.", "GROUPS")
    chosen = [str(g) for g in (("urban", "rural") if cluster_groups is None else cluster_groups)]
    if not chosen or len(set(chosen)) != len(chosen):
        raise InputError(f"give one or more distinct groups to cluster, got {chosen}.", "GROUPS")
    members: Dict[str, np.ndarray] = {}
    for group in chosen:
        members[group] = np.flatnonzero(np.asarray(labels, dtype=object) == group).astype(np.int64)
        n = len(members[group])
        if n == 0:
            raise InputError(f"no patch is in group '{group}'; groups present: "
                             f"{sorted(set(labels)) or 'none'}. Label or classify patches of '{group}', or leave "
                             "it out of the clustered groups.", "GROUPS")
        if config.k_max >= n:
            raise InputError(f"group '{group}' has {n} patches, so at most {n - 1} clusters can be scored; "
                             f"lower K_MAX below {n} (now {config.k_max}).", "K_MAX")

    ckpt = load_checkpoint(model_path, kind="scene")
    meta = ckpt.metadata
    torch_device = resolve_device(device)
    feedback.info(f"Device: {describe_device(torch_device)}")
    precision = choose_precision(torch_device, feedback=feedback)
    backoff = OomBackoff(config.batch_size, feedback, "patch", "Use smaller patches or DEVICE=cpu.", minimum=2)
    # only the clustered groups' patches are read ("uninhabited" ones are never needed)
    index = np.concatenate([members[g] for g in chosen])
    starts = np.cumsum([0] + [len(members[g]) for g in chosen])
    stack = load_patches([paths[i] for i in index], meta.bands, SubFeedback(feedback, 0.0, 5.0))
    if stack.height != meta.patch_size:
        feedback.warning(f"the patches are {stack.height} px high but the scene model was trained on "
                         f"{meta.patch_size} px patches; features of other sizes may cluster differently.")
    images = stack.normalized(meta.mean, meta.std)

    history: List[Dict[str, Any]] = []
    table: List[Dict[str, Any]] = []
    final: Dict[str, np.ndarray] = {}
    per_group = 75.0 / len(chosen)
    for gi, group in enumerate(chosen):
        rows_g = members[group]
        n = len(rows_g)
        k = min(config.k, n)
        if k < config.k:
            feedback.warning(f"group '{group}' has {n} patches: its k-means uses K = {k} instead of {config.k}.")
        dim = min(config.pca_dim, n - 1, _FEATURE_DIM)
        if dim > n / 2:
            feedback.warning(f"group '{group}': {dim} whitened dimensions for {n} patches; whitening this close to "
                             "the patch count spreads the patches evenly and hides clusters. Lower PCA_DIM.")
        group_images = images[starts[gi]:starts[gi + 1]]
        seed = config.seed + 1000 * gi
        rng, generator = seed_everything(seed)
        model = scene_model_from_checkpoint(ckpt, num_classes=k).to(torch_device)  # a fresh copy per group
        lo = 5.0 + gi * per_group
        step = per_group / (config.epochs + 1)
        previous: Optional[np.ndarray] = None
        for epoch in range(1, config.epochs + 1):
            check_canceled(feedback)
            sub = SubFeedback(feedback, lo + (epoch - 1) * step, lo + epoch * step)
            space = cluster_space(_features(model, group_images, torch_device, config.batch_size, sub), config.pca_dim)
            result = kmeans(space, k, niter=config.kmeans_iterations, seed=seed + epoch, feedback=None)
            targets = result.assignments.astype(np.int64)
            loss = _train_epoch(model, group_images, targets, k, config, torch_device, precision, backoff, rng,
                                generator, sub)
            row = {"group": group, "epoch": epoch, "objective": float(result.objective),
                   "nmi_previous": nmi(previous, targets) if previous is not None else float("nan"),
                   "loss": loss, "clusters_used": int((result.sizes > 0).sum())}
            previous = targets
            history.append(row)
            feedback.info(f"{group} epoch {epoch}/{config.epochs}: k-means objective {row['objective']:.4g}, "
                          f"{row['clusters_used']}/{k} clusters used, NMI with previous {row['nmi_previous']:.3f}, "
                          f"loss {loss:.4f}")
        check_canceled(feedback)
        # fresh features of the FINAL network (the original scored features from before the last epoch)
        final[group] = _features(model, group_images, torch_device, config.batch_size,
                                 SubFeedback(feedback, lo + config.epochs * step, lo + per_group))
        del model

    scored = SubFeedback(feedback, 80.0, 99.0)
    candidates = [(group, k) for group in chosen for k in range(config.k_min, config.k_max + 1)]
    spaces = {group: cluster_space(final[group], config.pca_dim) for group in chosen}
    for group, k in track(candidates, scored):
        result = kmeans(spaces[group], k, niter=config.kmeans_iterations, seed=config.seed)
        try:
            score = silhouette(spaces[group], result.assignments, sample=config.sample, seed=config.seed,
                               feedback=NullFeedback())
        except InputError:  # k-means left fewer than two clusters: undefined
            score = float("nan")
        table.append({"group": group, "k": k, "silhouette": float(score), "inertia": float(result.objective)})
    suggested = {group: _suggest(table, group) for group in chosen}
    suggested = {group: k for group, k in suggested.items() if k is not None}
    for group in chosen:
        feedback.info(f"{group}: {len(members[group])} patches; highest silhouette at k = {suggested.get(group)}")

    check_canceled(feedback)
    row_groups = [g for g in chosen for _ in range(len(members[g]))]
    written = _write_features(features_path, np.concatenate([final[g] for g in chosen]), index, row_groups, labels,
                              {"pca_dim": str(config.pca_dim), "cluster_groups": json.dumps(chosen),
                               "model": os.path.abspath(model_path), "config": json.dumps(asdict(config)),
                               "satseg_version": __version__})
    written_table = _write_table(table_path, table) if table_path else None
    written_plot = _write_plot(plot_path, table, suggested) if plot_path else None
    written_report = _write_report(report_path, table, suggested, written_plot) if report_path else None
    feedback.set_progress(100.0)
    return DeepClusterResult(features_path=written, table_path=written_table, plot_path=written_plot, rows=table,
                             suggested=suggested, counts={g: int(len(members[g])) for g in chosen}, history=history,
                             report_path=written_report)


def _read_features(path: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, str]]:
    safetensors = require("safetensors")
    if not os.path.isfile(path):
        raise InputError(f"features file '{os.path.abspath(path)}' does not exist; run DeepCluster first.", "FEATURES")
    try:
        with safetensors.safe_open(path, framework="numpy") as handle:
            header = dict(handle.metadata() or {})
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error type
        raise InputError(f"'{os.path.abspath(path)}' is not a readable safetensors file ({exc}); choose the "
                         "features file written by DeepCluster.", "FEATURES") from exc
    if header.get("satseg") != FEATURES_MARKER or "features" not in arrays or "index" not in arrays:
        raise InputError(f"'{os.path.abspath(path)}' is not a SatSeg DeepCluster features file; choose the "
                         "features file written by DeepCluster.", "FEATURES")
    return np.asarray(arrays["features"], np.float32), np.asarray(arrays["index"], np.int64), header


def extract_clusters(features_path: str, city_k: int, rural_k: int, groups: Sequence[str] = ("urban", "rural"),
                     seed: int = 0, kmeans_iterations: Optional[int] = None) -> ExtractResult:
    """Cluster the stored features of each group with the chosen numbers and number the clusters.

    Per group: the features are whitened and normalised as :func:`deep_cluster` did (same ``pca_dim``),
    clustered by seeded k-means, and the clusters are ordered by size (largest first), then by the first
    coordinate of their centre, so the ids depend only on the data and the seed, not on faiss's internal
    order. Ids: the first group ``1..city_k``, the second ``city_k + 1..city_k + rural_k``; every patch of
    another group ("uninhabited" or any other) gets the one id ``city_k + rural_k + 1``.

    Args:
        features_path: the features file of :func:`deep_cluster`.
        city_k: clusters of the first group.
        rural_k: clusters of the second group.
        groups: the (first, second) group names.
        seed: k-means seed (the same seed gives the same ids).
        kmeans_iterations: k-means iterations (None: those of the DeepCluster run, as in its silhouette table).

    Returns:
        The :class:`ExtractResult`: one row per patch of the original run (per stored row for files
        without ``patch_groups``).

    Raises:
        InputError: not a features file (``FEATURES``); two group names not given (``GROUPS``); a number of
            clusters below 1 or above the group's patch count (``CITY_K`` / ``RURAL_K``).
    """
    names = [str(g) for g in groups]
    if len(names) != 2 or names[0] == names[1]:
        raise InputError(f"give two distinct group names (city, rural), got {names}.", "GROUPS")
    feats, index, header = _read_features(features_path)
    row_groups = json.loads(header.get("groups", "[]"))
    if len(row_groups) != len(index) or feats.shape[0] != len(index):
        raise InputError(f"'{os.path.abspath(features_path)}' is damaged (rows, index and groups differ in length); "
                         "run DeepCluster again.", "FEATURES")
    pca_dim = int(header.get("pca_dim", _FEATURE_DIM))
    if kmeans_iterations is None:
        kmeans_iterations = int(json.loads(header.get("config", "{}")).get("kmeans_iterations", 20))
    patch_groups = json.loads(header["patch_groups"]) if "patch_groups" in header else None
    if patch_groups is not None:
        out_index = np.arange(len(patch_groups), dtype=np.int64)
        out_groups = [str(g) for g in patch_groups]
    else:
        out_index, out_groups = index.copy(), [str(g) for g in row_groups]
    position = {int(p): i for i, p in enumerate(out_index)}
    other_id = int(city_k) + int(rural_k) + 1
    clusters = np.full(len(out_index), other_id, np.int64)
    distances = np.full(len(out_index), np.nan, np.float32)
    row_groups_arr = np.asarray(row_groups, dtype=object)
    offset = 0
    for name, k, parameter in ((names[0], int(city_k), "CITY_K"), (names[1], int(rural_k), "RURAL_K")):
        rows = np.flatnonzero(row_groups_arr == name)
        if not 1 <= k <= len(rows):
            raise InputError(f"group '{name}' has {len(rows)} patches in the features file; choose between 1 and "
                             f"{len(rows)} clusters, got {k}.", parameter)
        space = cluster_space(feats[rows], pca_dim) if len(rows) >= 2 else l2_normalize(feats[rows])
        result = kmeans(space, k, niter=kmeans_iterations, seed=seed)
        order = sorted(range(k), key=lambda c: (-int(result.sizes[c]), float(result.centroids[c, 0]), c))
        rank = np.empty(k, np.int64)
        rank[order] = np.arange(k)
        targets = np.asarray([position[int(p)] for p in index[rows]], np.int64)
        clusters[targets] = offset + 1 + rank[result.assignments]
        distances[targets] = np.sqrt(np.maximum(result.distances, 0.0))
        offset += k
    ids, counts = np.unique(clusters, return_counts=True)
    return ExtractResult(index=out_index, groups=out_groups, clusters=clusters, distances=distances,
                         other_id=other_id, sizes={int(i): int(c) for i, c in zip(ids, counts)})


def copy_cluster_patches(patch_paths: Sequence[str], clusters: Sequence[int], out_dir: str, overwrite: bool = False,
                         feedback: Optional[Feedback] = None) -> Dict[int, List[str]]:
    """Copy each patch file into ``out_dir/cluster_<id>/``, named ``<position>_<file name>``.

    The position prefix (zero-padded index into ``patch_paths``) keeps names unique when patches of several
    rasters or years share file names. The folder is built beside ``out_dir`` and moved into place when
    every file is copied (a cancel or error leaves nothing); an existing non-empty ``out_dir`` is refused
    unless ``overwrite`` is set and SatSeg wrote it (it holds ``satseg_manifest.json``, which lists the copies).

    Args:
        patch_paths: the patch files.
        clusters: the cluster id of each patch (e.g. ``ExtractResult.per_patch(len(patch_paths))``); patches
            with an id below 1 are not copied.
        out_dir: the output folder.
        overwrite: replace an earlier output of this function.
        feedback: progress and cancel, checked before each file.

    Returns:
        ``{cluster id: [copied file paths]}`` (final paths).

    Raises:
        InputError: clusters not one per patch (``CLUSTERS``), or a patch file missing (``PATCH_INDEX``).
        OutputError: ``out_dir`` cannot be used (see :class:`.staging.StagedDirectory`).
        CanceledError: when the user cancels.
    """
    from ....core.version import __version__

    feedback = feedback or NullFeedback()
    paths = [os.path.abspath(str(p)) for p in patch_paths]
    ids = [int(c) for c in clusters]
    if len(ids) != len(paths):
        raise InputError(f"{len(ids)} cluster ids for {len(paths)} patches; give one id per patch.", "CLUSTERS")
    missing = [p for p, c in zip(paths, ids) if c >= 1 and not os.path.isfile(p)]
    if missing:
        raise InputError(f"patch file '{missing[0]}' does not exist ({len(missing)} missing).", "PATCH_INDEX")
    width = len(str(max(len(paths) - 1, 0)))
    copied: Dict[int, List[str]] = {}
    entries = []
    with StagedDirectory(out_dir, overwrite=overwrite, parameter="OUTPUT_DIR") as staged:
        for position in track(range(len(paths)), feedback, total=len(paths)):
            cluster = ids[position]
            if cluster < 1:
                continue
            name = os.path.join(f"cluster_{cluster}", f"{position:0{width}d}_{os.path.basename(paths[position])}")
            os.makedirs(os.path.dirname(staged.staged_path(name)), exist_ok=True)
            shutil.copy2(paths[position], staged.staged_path(name))
            copied.setdefault(cluster, []).append(staged.final_path(name))
            entries.append({"position": position, "cluster": cluster, "source": paths[position], "file": name})
        staged.write_manifest({"satseg": "cluster-patches", "satseg_version": __version__,
                               "clusters": {str(c): len(v) for c, v in sorted(copied.items())}, "files": entries})
        staged.commit()
    return copied
