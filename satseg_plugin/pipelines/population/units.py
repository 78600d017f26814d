"""The population tools' Dask work units: one frame pair's flow (``opticalflow``), one frame's communities
(``populationclusters``).

With a SCHEDULER (:mod:`...core.distributed`, docs/distributed.md) each unit runs on a worker: it reads its
frames (and its flow) from storage the workers share, on the first frame's grid exactly as
:func:`~.frames.load_frames` gives them in-process (:func:`~.frames.frame_on_grid`), runs the same engine
function as the in-process run and writes its raster into the run's staging folder. What comes back is
what the client reports: a pair's flow (the arrows are sampled from it) and a frame's community records
and report row. The client has loaded and checked the whole series before, so a unit's inputs are known
good, and on the CPU the outputs are the in-process run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import rasterio

from ...core.distributed import Scheduler, checked_client, run_units
from ...core.progress import Feedback
from ...core.raster import Grid, geotiff_profile, raster_env
from .communities import FrameCommunities, frame_communities
from .config import CommunityConfig, FlowConfig
from .flow import FlowResult, FramePair, horn_schunck, read_flow, write_flow
from .frames import frame_on_grid

__all__ = ["FlowPairUnit", "FrameUnit", "flow_pair", "frame_unit", "flows_on_cluster", "communities_on_cluster",
           "write_segments", "frame_report"]


@dataclass(frozen=True)
class FlowPairUnit:
    """The flow of one frame pair, written to ``path`` (a work unit of ``opticalflow``).

    Attributes:
        frames: every frame's path, in time order (frame 0 gives the grid).
        pair: the pair (its ``from_index`` and ``to_index`` are positions in ``frames``).
        band: the band read from the frames.
        config: the Horn–Schunck settings (``device`` is resolved on the worker).
        grid: the frames' grid (the flow file's).
        path: the flow file, in the run's staging folder.
    """

    frames: Tuple[str, ...]
    pair: FramePair
    band: int
    config: FlowConfig
    grid: Grid
    path: str


def flow_pair(unit: FlowPairUnit, feedback: Feedback) -> FlowResult:
    """Compute and write one pair's flow (NaN where either frame is nodata, as in-process); the flow."""
    first = frame_on_grid(unit.frames, unit.pair.from_index, unit.band)
    second = frame_on_grid(unit.frames, unit.pair.to_index, unit.band)
    flow = horn_schunck(first, second, unit.config, feedback)
    write_flow(unit.path, flow, unit.grid, nodata_mask=np.isnan(first) | np.isnan(second), parameter="OUTPUT_DIR",
               pair=unit.pair)
    return flow


def flows_on_cluster(scheduler: Scheduler, units: Sequence[FlowPairUnit], staged_dir: str,
                     feedback: Feedback) -> List[FlowResult]:
    """Run the pairs' units on a Dask cluster (their flow files land in ``staged_dir``); the flows in order."""
    with checked_client(scheduler, feedback, [(p, "FRAMES") for p in units[0].frames], staged_dir,
                        "OUTPUT_DIR") as client:
        feedback.info(f"{len(units)} frame pairs run as Dask work units.")
        return run_units(client, flow_pair, units, feedback, what="frame pair")


@dataclass(frozen=True)
class FrameUnit:
    """The communities of one frame, their segments written to ``path`` (a work unit of ``populationclusters``).

    Attributes:
        frames: every frame's path, in time order (frame 0 gives the grid).
        index: the frame's position in ``frames``.
        name: the frame's name in the series.
        band: the band read from the frames.
        flow: the flow file describing the frame (:func:`~.run.flow_index_for_frame`).
        config: the community settings (``device`` is resolved on the worker).
        grid: the frames' grid.
        pixel_area_m2: the area of one pixel (the client computed it and warned about it once).
        report_k: also compute the k report.
        path: the segment raster, in the run's staging folder.
    """

    frames: Tuple[str, ...]
    index: int
    name: str
    band: int
    flow: str
    config: CommunityConfig
    grid: Grid
    pixel_area_m2: float
    report_k: bool
    path: str


def write_segments(path: str, segments: np.ndarray, grid: Grid, frame: int, name: str) -> None:
    """Write a frame's community segments (int32, 0 = none) as a GeoTIFF on the frames' grid."""
    profile = geotiff_profile(grid.width, grid.height, 1, "int32", grid.crs, grid.transform, 0)
    with raster_env(), rasterio.open(path, "w", **profile) as dst:
        dst.write(segments.astype(np.int32), 1)
        dst.set_band_description(1, f"community segment id ({name})")
        dst.update_tags(SATSEG_KIND="population-segments", FRAME=str(frame), FRAME_NAME=name)


def frame_report(frame: int, name: str, result: FrameCommunities) -> Dict[str, Any]:
    """A frame's row of the run's report."""
    return {"frame": frame, "name": name, "communities": len(result.records), "ae_mse": result.ae_mse,
            "ae_mse_std": result.ae_mse_std, "ae_baseline_mse": result.ae_baseline_mse,
            "kmeans_objective": result.kmeans_objective, "clustered_pixels": result.clustered_pixels}


def frame_unit(unit: FrameUnit, feedback: Feedback) -> Tuple[List[Any], List[Dict[str, float]], Dict[str, Any]]:
    """Find and write one frame's communities; its records, k report rows and report row (the segments stay
    in the file)."""
    population = frame_on_grid(unit.frames, unit.index, unit.band)
    u, v = read_flow(unit.flow, "FLOWS")
    result = frame_communities(population, u, v, unit.grid.transform, unit.pixel_area_m2, unit.config, feedback,
                               report_k=unit.report_k, name=unit.name)
    write_segments(unit.path, result.segments, unit.grid, unit.index, unit.name)
    return result.records, result.k_report, frame_report(unit.index, unit.name, result)


def communities_on_cluster(scheduler: Scheduler, units: Sequence[FrameUnit], staged_dir: str, feedback: Feedback
                           ) -> List[Tuple[List[Any], List[Dict[str, float]], Dict[str, Any]]]:
    """Run the frames' units on a Dask cluster (their segment rasters land in ``staged_dir``); their outcomes."""
    inputs = [(p, "FRAMES") for p in units[0].frames] + [(p, "FLOWS") for p in sorted({u.flow for u in units})]
    with checked_client(scheduler, feedback, inputs, staged_dir, "OUTPUT_DIR") as client:
        feedback.info(f"{len(units)} frames run as Dask work units.")
        return run_units(client, frame_unit, units, feedback, what="frame")
