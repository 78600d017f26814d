"""The population-tracking pipeline as three runs, one per Processing algorithm.

1. :func:`run_optical_flow`: frames -> a flow GeoTIFF per consecutive pair (+ sampled flow arrows).
2. :func:`run_communities`: frames + flows -> a segment GeoTIFF per frame (+ community records and reports).
3. :func:`run_tracking`: segment rasters + flows -> links between consecutive frames, a track id per
   community and the lines joining community centroids along tracks.

Each run reads its inputs, calls the engine modules that do the work (:mod:`.frames`, :mod:`.flow`,
:mod:`.communities`, :mod:`.tracks`) and writes its rasters into one output folder that is staged: a failed
or canceled run leaves no half-written folder and keeps an earlier output intact. With a SCHEDULER the first
two hand their frame pairs / frames to a Dask cluster as work units (:mod:`.units`), with the same outputs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine

from ...core.distributed import parse_scheduler
from ...core.errors import InputError
from ...core.progress import Feedback, NullFeedback, SubFeedback, check_canceled
from ...core.staging import StagedDirectory, Transaction, stages_outputs

__all__ = ["FlowRun", "CommunityRun", "TrackRun", "pixel_area_m2", "run_optical_flow", "run_communities",
           "run_tracking", "flow_index_for_frame"]

#: Mean radius of the earth (m), for the approximate pixel area of geographic (degree) grids.
_EARTH_RADIUS_M = 6_371_008.8


@dataclass
class FlowRun:
    """Outputs of :func:`run_optical_flow`.

    Attributes:
        flow_paths: one 2-band flow GeoTIFF per consecutive frame pair, in time order.
        frame_names: the frames' names.
        vectors: ``(pair index, FlowVector)`` for the sampled arrows of every pair.
        stats: per pair: ``pair``, ``from``, ``to``, ``iterations``, ``converged``, ``mean_speed_px``.
        crs: the frames' CRS (rasterio).
    """

    flow_paths: List[str]
    frame_names: List[str]
    vectors: List[Tuple[int, Any]]
    stats: List[Dict[str, Any]]
    crs: Any


@dataclass
class CommunityRun:
    """Outputs of :func:`run_communities`.

    Attributes:
        segment_paths: one int32 segment GeoTIFF per frame (0 = no community).
        frame_names: the frames' names.
        communities: per frame, the :class:`~.communities.Community` records.
        reports: per frame: ``frame``, ``name``, ``communities``, ``ae_mse``, ``ae_mse_std``,
            ``ae_baseline_mse``, ``kmeans_objective``, ``clustered_pixels``.
        k_reports: per frame, the k report rows (empty unless asked for).
        crs: the frames' CRS.
    """

    segment_paths: List[str]
    frame_names: List[str]
    communities: List[List[Any]]
    reports: List[Dict[str, Any]]
    k_reports: List[List[Dict[str, float]]]
    crs: Any


@dataclass
class TrackRun:
    """Outputs of :func:`run_tracking`.

    Attributes:
        tracking: the :class:`~.tracks.Tracking` (links, track ids per frame, lines).
        frame_names: the segment rasters' names (one per frame).
        centroids: per frame, ``segment id -> (x, y)`` population-weighted centroid in map coordinates.
        crs: the rasters' CRS.
    """

    tracking: Any
    frame_names: List[str]
    centroids: List[Dict[int, Tuple[float, float]]]
    crs: Any
    populations: List[Dict[int, float]] = field(default_factory=list)


def pixel_area_m2(crs: Any, transform: Affine, height: int, feedback: Optional[Feedback] = None) -> float:
    """Area of one pixel in m².

    Projected grids: the transform's determinant times the CRS unit squared. Geographic grids (e.g. GPWv4 in
    EPSG:4326): the spherical area of a pixel at the grid's middle row, with a warning, since a degree cell
    shrinks towards the poles.
    """
    from ...core.vectorize import area_factor

    area = abs(transform.determinant)
    if crs is not None and crs.is_geographic:
        lat = (transform * (0, height / 2.0))[1]
        dx, dy = math.radians(math.hypot(transform.a, transform.d)), math.radians(math.hypot(transform.b,
                                                                                          transform.e))
        area = _EARTH_RADIUS_M ** 2 * dx * dy * math.cos(math.radians(max(-90.0, min(90.0, lat))))
        (feedback or NullFeedback()).warning(
            f"The frames are in a geographic CRS (degrees): areas use the pixel area at latitude {lat:.2f} "
            f"({area / 1e6:.3f} km²) for every pixel. Reproject the frames to an equal-area CRS for exact areas.")
        return float(area)
    return float(area * area_factor(crs))


def flow_index_for_frame(frame: int, frames: int) -> int:
    """Which pair's flow describes frame ``frame``: its own pair ``(t, t + 1)``, the last frame the pair before."""
    return min(frame, frames - 2)


@stages_outputs
def run_optical_flow(frame_paths: Sequence[str], out_dir: str, config: Optional[Any] = None, vector_step: int = 10,
                     min_magnitude: float = 0.0, overwrite: bool = False, band: int = 1,
                     feedback: Optional[Feedback] = None, transaction: Optional[Transaction] = None,
                     scheduler: str = "") -> FlowRun:
    """Horn–Schunck flow between every pair of consecutive frames, written as GeoTIFFs.

    Args:
        frame_paths: population rasters in time order (at least two).
        out_dir: output folder (created; an earlier SatSeg output is replaced only with ``overwrite``).
        config: :class:`~.flow.FlowConfig` (None: defaults).
        vector_step: spacing in pixels of the sampled flow arrows (VECTOR_STEP).
        min_magnitude: leave out arrows shorter than this many pixels per frame.
        overwrite: replace an earlier SatSeg output folder.
        band: band read from every frame.
        feedback: progress, messages and cancel.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        scheduler: SCHEDULER (:func:`~...core.distributed.parse_scheduler`): empty runs in-process; ``local:N``
            or a scheduler's address run the frame pairs as Dask work units (:mod:`.units`) on storage the
            workers share, with the same flows.

    Returns:
        The flow files ``flow_<t>_<frame t>_<frame t+1>.tif`` and the sampled arrows.
    """
    from .flow import FlowConfig, FramePair, flow_message, flow_series, flow_vectors, write_flow
    from .frames import load_frames

    feedback = feedback or NullFeedback()
    config = config or FlowConfig()
    config.validate()
    if vector_step < 1:
        raise InputError(f"must be at least 1 pixel, got {vector_step}.", "VECTOR_STEP")
    cluster = parse_scheduler(scheduler)
    staged = StagedDirectory(out_dir, overwrite, "OUTPUT_DIR")
    series = load_frames(frame_paths, SubFeedback(feedback, 0, 5), band=band)
    with staged:
        names = [f"flow_{t}_{series.names[t]}_{series.names[t + 1]}.tif" for t in range(len(series) - 1)]
        pairs = [FramePair(t, t + 1, os.path.basename(frame_paths[t]), os.path.basename(frame_paths[t + 1]),
                           series.names[t], series.names[t + 1]) for t in range(len(series) - 1)]
        if cluster.in_process:
            flows = flow_series(series, config, SubFeedback(feedback, 5, 90))
        else:
            from .units import FlowPairUnit, flows_on_cluster

            units = [FlowPairUnit(tuple(os.path.abspath(p) for p in frame_paths), pair, band, config, series.grid,
                                  staged.staged_path(name)) for pair, name in zip(pairs, names)]
            flows = flows_on_cluster(cluster, units, staged.staged_path(""), SubFeedback(feedback, 5, 90))
            for pair, flow in zip(pairs, flows):
                feedback.info(flow_message(pair.from_name, pair.to_name, flow))
        paths, vectors, stats = [], [], []
        for t, flow in enumerate(flows):
            check_canceled(feedback)
            nodata = series.nodata_mask(t, t + 1)
            if cluster.in_process:  # on a cluster each unit wrote its flow file
                write_flow(staged.staged_path(names[t]), flow, series, nodata_mask=nodata, parameter="OUTPUT_DIR",
                           pair=pairs[t])
            paths.append(staged.final_path(names[t]))
            u, v = np.where(nodata, np.nan, flow.u), np.where(nodata, np.nan, flow.v)
            vectors += [(t, vec) for vec in flow_vectors(u, v, series.transform, vector_step, min_magnitude)]
            speed = np.hypot(flow.u, flow.v)[~nodata]
            stats.append({"pair": t, "from": series.names[t], "to": series.names[t + 1],
                          "iterations": flow.iterations, "converged": bool(flow.converged),
                          "mean_speed_px": float(speed.mean()) if speed.size else 0.0,
                          "max_speed_px": float(speed.max()) if speed.size else 0.0})
            feedback.set_progress(90 + 10 * (t + 1) / len(flows))
        staged.write_manifest({"kind": "satseg-optical-flow", "frames": [os.path.abspath(p) for p in frame_paths],
                               "flows": [os.path.basename(p) for p in paths], "alpha": config.alpha,
                               "iterations": config.iterations, "tolerance": config.tolerance,
                               "pyramid_levels": config.pyramid_levels, "stats": stats})
        check_canceled(feedback)
        staged.commit()
    return FlowRun(paths, list(series.names), vectors, stats, series.crs)


def _read_flows(flow_paths: Sequence[str], shape: Tuple[int, int], parameter: str = "FLOWS"
                ) -> List[Tuple[np.ndarray, np.ndarray]]:
    from .flow import read_flow

    flows = []
    for path in flow_paths:
        u, v = read_flow(path, parameter)
        if u.shape != shape:
            raise InputError(f"flow '{os.path.basename(path)}' is {u.shape[1]} x {u.shape[0]} pixels but the frames "
                             f"are {shape[1]} x {shape[0]}; compute the flows from these frames with "
                             "'Optical flow between frames'.", parameter)
        flows.append((u, v))
    return flows


def _check_flow_count(frames: int, flows: int, parameter: str = "FLOWS") -> None:
    if flows != frames - 1:
        raise InputError(f"{flows} flow raster(s) for {frames} frames; give the {frames - 1} flows of consecutive "
                         "frame pairs, in time order (the outputs of 'Optical flow between frames').", parameter)


def _check_flow_pairs(flow_paths: Sequence[str], files: Optional[Sequence[str]], names: Sequence[Optional[str]],
                      feedback: Feedback, parameter: str = "FLOWS") -> None:
    """Refuse a flow that records other frames than the consecutive pair it is given for.

    Flow ``t`` must go from frame ``t`` to frame ``t + 1``: compared by file name where the frames' files
    are known (``files``), else by frame name (``names``, e.g. the segment rasters' FRAME_NAME tags; None
    where unknown). Flows written before SatSeg recorded their frames are accepted with a warning.
    """
    from .flow import read_flow_pair

    untagged = []
    for t, path in enumerate(flow_paths):
        pair = read_flow_pair(path, parameter)
        if pair is None:
            untagged.append(os.path.basename(path))
            continue
        if files is not None:
            got, want = (pair.from_file, pair.to_file), (files[t], files[t + 1])
        else:
            got, want = (pair.from_name, pair.to_name), (names[t], names[t + 1])
        if None not in want and got != want:
            raise InputError(f"flow '{os.path.basename(path)}' was computed for {pair.describe()}, but it is given "
                             f"as flow {t + 1}, between '{want[0]}' and '{want[1]}'. Give the flows in time order, "
                             "one per consecutive pair of these frames.", parameter)
    if untagged:
        feedback.warning(f"{len(untagged)} flow raster(s) ({', '.join(untagged[:3])}) do not record the frames "
                         "they were computed for (written by an older SatSeg), so their order cannot be checked; "
                         "make sure they are given in time order.")


def _check_same_grid(path: str, crs: Any, transform: Affine, shape: Tuple[int, int], parameter: str) -> None:
    """Refuse a raster that is not on the frames' grid (flows and segments are never resampled)."""
    from ...core.raster import open_raster, raster_env

    with raster_env(), open_raster(path, parameter) as src:
        _require_grid(f"'{os.path.basename(path)}'", crs, transform, shape, src.crs, src.transform,
                      (src.height, src.width), parameter)


def _require_grid(what: str, crs: Any, transform: Affine, shape: Tuple[int, int], other_crs: Any,
                  other_transform: Affine, other_shape: Tuple[int, int], parameter: str) -> None:
    """Refuse an input whose CRS or pixel grid (:func:`~satseg_plugin.core.raster.same_grid`) differs from the
    other inputs'; ``shape`` is ``(height, width)``."""
    from ...core.raster import Grid, same_grid

    if not same_grid(Grid(other_crs, other_transform, other_shape[1], other_shape[0]),
                     Grid(crs, transform, shape[1], shape[0])):
        raise InputError(f"{what} is not on the grid of the other inputs (CRS, pixel size, origin and size must "
                         "match); use the outputs of one SatSeg run.", parameter)


@stages_outputs
def run_communities(frame_paths: Sequence[str], flow_paths: Sequence[str], out_dir: str, config: Optional[Any] = None,
                    report_k: bool = False, overwrite: bool = False, band: int = 1,
                    feedback: Optional[Feedback] = None, transaction: Optional[Transaction] = None,
                    scheduler: str = "") -> CommunityRun:
    """Communities per frame: window autoencoder codes, k-means, then DBSCAN on pixel positions per label.

    Frame ``t`` uses the flow of pair ``(t, t + 1)``; the last frame uses the pair before it.

    Args:
        frame_paths: population rasters in time order.
        flow_paths: the flows of consecutive pairs (``len(frame_paths) - 1``), from :func:`run_optical_flow`.
        out_dir: output folder of ``segments_<t>_<frame>.tif``.
        config: :class:`~.communities.CommunityConfig` (None: defaults).
        report_k: also report inertia and silhouette for ``k_min..k_max`` per frame.
        overwrite: replace an earlier SatSeg output folder.
        band: band read from every frame.
        feedback: progress, messages and cancel.
        transaction: stage the outputs into this run's transaction and leave the commit to its owner
            (default: the current run's, else they are moved into place together when this returns).
        scheduler: SCHEDULER (:func:`~...core.distributed.parse_scheduler`): empty runs in-process; ``local:N``
            or a scheduler's address run the frames as Dask work units (:mod:`.units`) on storage the workers
            share, with the same segments and records.
    """
    from .communities import CommunityConfig, frame_communities
    from .frames import load_frames
    from .units import FrameUnit, communities_on_cluster, frame_report, write_segments

    feedback = feedback or NullFeedback()
    config = config or CommunityConfig()
    config.validate()
    _check_flow_count(len(frame_paths), len(flow_paths))
    cluster = parse_scheduler(scheduler)
    staged = StagedDirectory(out_dir, overwrite, "OUTPUT_DIR")
    series = load_frames(frame_paths, SubFeedback(feedback, 0, 3), band=band)
    shape = (series.height, series.width)
    for path in flow_paths:
        _check_same_grid(path, series.crs, series.transform, shape, "FLOWS")
    _check_flow_pairs(flow_paths, [os.path.basename(p) for p in frame_paths], series.names, feedback)
    area = pixel_area_m2(series.crs, series.transform, series.height, feedback)
    n = len(series)
    names = [f"segments_{t}_{series.names[t]}.tif" for t in range(n)]
    paths, communities, reports, k_reports = [], [], [], []

    def keep(records: List[Any], k_report: List[Dict[str, float]], report: Dict[str, Any]) -> None:
        paths.append(staged.final_path(names[report["frame"]]))
        communities.append(records)
        k_reports.append(k_report)
        reports.append(report)
        feedback.info(f"Frame {report['name']}: {report['communities']} communities; autoencoder MSE "
                      f"{report['ae_mse']:.2e} ± {report['ae_mse_std']:.1e} (mean-window baseline "
                      f"{report['ae_baseline_mse']:.2e}).")

    with staged:
        if cluster.in_process:
            flows = _read_flows(flow_paths, shape)
            for t in range(n):
                check_canceled(feedback)
                u, v = flows[flow_index_for_frame(t, n)]
                sub = SubFeedback(feedback, 3 + 95 * t / n, 3 + 95 * (t + 1) / n)
                result = frame_communities(series.arrays[t], u, v, series.transform, area, config, sub,
                                           report_k=report_k, name=series.names[t])
                write_segments(staged.staged_path(names[t]), result.segments, series.grid, t, series.names[t])
                keep(result.records, result.k_report, frame_report(t, series.names[t], result))
        else:
            frames = tuple(os.path.abspath(p) for p in frame_paths)
            units = [FrameUnit(frames, t, series.names[t], band, os.path.abspath(flow_paths[flow_index_for_frame(t, n)]),
                               config, series.grid, area, report_k, staged.staged_path(names[t])) for t in range(n)]
            for outcome in communities_on_cluster(cluster, units, staged.staged_path(""), SubFeedback(feedback, 3, 98)):
                keep(*outcome)
        staged.write_manifest({"kind": "satseg-population-segments",
                               "frames": [os.path.abspath(p) for p in frame_paths],
                               "flows": [os.path.abspath(p) for p in flow_paths],
                               "segments": [os.path.basename(p) for p in paths], "reports": reports,
                               "config": {k: getattr(config, k) for k in ("window", "latent", "epochs", "k", "eps",
                                                                          "min_samples", "seed")}})
        check_canceled(feedback)
        staged.commit()
    feedback.set_progress(100)
    return CommunityRun(paths, list(series.names), communities, reports, k_reports, series.crs)


def run_tracking(segment_paths: Sequence[str], flow_paths: Sequence[str], frame_paths: Optional[Sequence[str]] = None,
                 min_overlap: int = 1, min_fraction: float = 0.2, compare: str = "same",
                 feedback: Optional[Feedback] = None) -> TrackRun:
    """Link the communities of consecutive frames by flow and give every community a track id.

    Args:
        segment_paths: segment rasters in time order (from :func:`run_communities`).
        flow_paths: the flows of consecutive pairs.
        frame_paths: the population frames, to weight the centroids by population (None: pixel centroids).
        min_overlap: MIN_OVERLAP pixels a link needs.
        min_fraction: MIN_FRACTION of the smaller segment a link must cover.
        compare: ``same`` or ``next``: which flow the advected pixels are compared with (see :mod:`.tracks`).
        feedback: progress and cancel.
    """
    from ...core.raster import open_raster, raster_env
    from .communities import community_records
    from .frames import load_frames
    from .tracks import track_communities

    feedback = feedback or NullFeedback()
    if len(segment_paths) < 2:
        raise InputError(f"{len(segment_paths)} segment raster(s) given; tracking needs at least two frames.",
                         "SEGMENTS")
    _check_flow_count(len(segment_paths), len(flow_paths))
    segments, names, frame_names = [], [], []
    crs = transform = None
    shape: Tuple[int, int] = (0, 0)
    with raster_env():
        for i, path in enumerate(segment_paths):
            with open_raster(path, "SEGMENTS") as src:
                if i == 0:
                    crs, transform, shape = src.crs, src.transform, (src.height, src.width)
                data = src.read(1)
                frame_names.append(src.tags().get("FRAME_NAME"))
            if i > 0:
                _check_same_grid(path, crs, transform, shape, "SEGMENTS")
            if not np.issubdtype(data.dtype, np.integer):
                raise InputError(f"'{os.path.basename(path)}' holds {data.dtype} values; give the integer segment "
                                 "rasters written by 'Population communities'.", "SEGMENTS")
            segments.append(data.astype(np.int32))
            names.append(os.path.splitext(os.path.basename(path))[0])
    for path in flow_paths:
        _check_same_grid(path, crs, transform, shape, "FLOWS")
    # the frames' file names check the flows when there is one frame per segment raster (else refused below)
    files = [os.path.basename(p) for p in frame_paths] if frame_paths and len(frame_paths) == len(segments) else None
    _check_flow_pairs(flow_paths, files, frame_names, feedback)
    flows = _read_flows(flow_paths, shape)
    populations: List[Optional[np.ndarray]] = [None] * len(segments)
    if frame_paths:
        if len(frame_paths) != len(segments):
            raise InputError(f"{len(frame_paths)} frames for {len(segments)} segment rasters; give one frame per "
                             "segment raster, or none.", "FRAMES")
        series = load_frames(frame_paths, SubFeedback(feedback, 0, 5))
        _require_grid("the frames", crs, transform, shape, series.crs, series.transform,
                      (series.height, series.width), "FRAMES")
        populations = list(series.arrays)
    tracking = track_communities(segments, flows, SubFeedback(feedback, 5, 90), min_overlap=min_overlap,
                                 min_fraction=min_fraction, compare=compare)
    centroids, pops = [], []
    for seg, pop in zip(segments, populations):
        check_canceled(feedback)
        weights = pop if pop is not None else np.ones(seg.shape, np.float32)
        records = community_records(seg, np.zeros(seg.shape, np.int16), weights, transform, 1.0, polygons=False)
        centroids.append({r.segment_id: (r.centroid_x, r.centroid_y) for r in records})
        pops.append({r.segment_id: r.population for r in records} if pop is not None else {})
    feedback.set_progress(100)
    return TrackRun(tracking, names, centroids, crs, pops)
