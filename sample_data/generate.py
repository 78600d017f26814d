"""Command line and public face of the sample-data generators.

``python -m sample_data.generate`` writes the seeded settlement scene (:mod:`sample_data.scene`: an RGB
GeoTIFF and the exact building footprints as a GeoPackage), with ``--mosaic`` the mosaic of urban, rural
and uninhabited regions (:mod:`sample_data.mosaic`, 2048 px by default, into
``sample_data/generated/mosaic``, with the regions as ``regions.gpkg``, the truth for scene
classification), and with ``--population DIR`` the population time series (:mod:`sample_data.population`).

Command line::

    python -m sample_data.generate [--out DIR] [--size N] [--seed S] [--pixel-size M] [--mosaic] [--force]

The names below are importable from here as well as from the modules that define them; the pieces are:

- :mod:`sample_data.common`: classes, the :class:`Scene` and :class:`Building` types, noise, geometry and
  the file formats (:func:`read_buildings`, :func:`building_mask`);
- :mod:`sample_data.scene_layout` and :mod:`sample_data.scene`: where the settlement's water, roads,
  fields, buildings and trees go, and the painting stages both generators share;
- :mod:`sample_data.mosaic_layout` and :mod:`sample_data.mosaic`: the regions and what each holds.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from sample_data.common import (
    BUILDINGS_NAME,
    CLASS_NAMES,
    LAYER_NAME,
    ROOF_COLOURS,
    SCENE_NAME,
    Building,
    Scene,
    building_mask,
    read_buildings,
    scene_paths,
)
from sample_data.mosaic import (
    DEFAULT_MOSAIC_DIR,
    MOSAIC_DENSITY,
    MOSAIC_PARAMS_NAME,
    MOSAIC_VERSION,
    REGION_CLASSES,
    REGIONS_LAYER,
    REGIONS_NAME,
    Mosaic,
    generate_mosaic,
    is_mosaic_up_to_date,
    mosaic_params,
    mosaic_paths,
    read_regions,
    render_mosaic,
)
from sample_data.scene import (
    DEFAULT_OUT_DIR,
    GENERATOR_VERSION,
    PARAMS_NAME,
    generate_scene,
    is_up_to_date,
    render_scene,
    scene_params,
)

__all__ = [
    "BUILDINGS_NAME",
    "CLASS_NAMES",
    "DEFAULT_MOSAIC_DIR",
    "DEFAULT_OUT_DIR",
    "GENERATOR_VERSION",
    "LAYER_NAME",
    "MOSAIC_DENSITY",
    "MOSAIC_PARAMS_NAME",
    "MOSAIC_VERSION",
    "PARAMS_NAME",
    "REGIONS_LAYER",
    "REGIONS_NAME",
    "REGION_CLASSES",
    "ROOF_COLOURS",
    "SCENE_NAME",
    "Building",
    "Mosaic",
    "Scene",
    "building_mask",
    "generate_mosaic",
    "generate_scene",
    "is_mosaic_up_to_date",
    "is_up_to_date",
    "main",
    "mosaic_params",
    "read_buildings",
    "read_regions",
    "render_mosaic",
    "render_scene",
    "scene_params",
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on invalid arguments.
    """
    parser = argparse.ArgumentParser(prog="python -m sample_data.generate",
                                     description="Write a seeded synthetic aerial scene and its building footprints.")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: {DEFAULT_OUT_DIR}, with --mosaic {DEFAULT_MOSAIC_DIR})")
    parser.add_argument("--size", type=int, default=None,
                        help="width and height in pixels (default: 1024, with --mosaic 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--pixel-size", type=float, default=0.5, help="pixel size in metres (default: %(default)s)")
    parser.add_argument("--mosaic", action="store_true",
                        help="write a mosaic of urban, rural and uninhabited regions with regions.gpkg "
                             "(generate_mosaic) instead of the settlement scene")
    parser.add_argument("--force", action="store_true", help="regenerate even if the files are up to date")
    parser.add_argument("--population", metavar="DIR", help="write the population time series into DIR instead")
    args = parser.parse_args(argv)
    if args.population:  # the population time series: sample_data/population.py
        from sample_data.population import run_cli
        return run_cli(args.population, seed=args.seed, force=args.force)
    out = args.out if args.out is not None else (DEFAULT_MOSAIC_DIR if args.mosaic else DEFAULT_OUT_DIR)
    size = args.size if args.size is not None else (2048 if args.mosaic else 1024)
    kwargs = dict(size=size, pixel_size=args.pixel_size, seed=args.seed)
    up_to_date, generate, names = ((is_mosaic_up_to_date, generate_mosaic, mosaic_paths) if args.mosaic
                                   else (is_up_to_date, generate_scene, scene_paths))
    try:
        if not args.force and up_to_date(out, **kwargs):
            paths = names(out)
            print(f"Up to date (use --force to regenerate): {out}")
        else:
            paths = generate(out, **kwargs)
    except ValueError as exc:
        parser.error(str(exc))
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
