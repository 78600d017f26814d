"""Export rasters as Cloud-Optimised GeoTIFFs (GDAL's COG driver), staged so nothing half-written remains."""

from __future__ import annotations

import os
from typing import Optional

from .errors import InputError
from .progress import Feedback, NullFeedback
from .staging import StagedFile

__all__ = ["COG_COMPRESSIONS", "export_cog"]

#: COG compressions offered (LERC/ZSTD need GDAL builds that not every QGIS has).
COG_COMPRESSIONS = ("DEFLATE", "LZW", "NONE")


def export_cog(source: str, output_path: str, compression: str = "DEFLATE", feedback: Optional[Feedback] = None,
               parameter: str = "OUTPUT") -> str:
    """Copy ``source`` to a Cloud-Optimised GeoTIFF: tiled 512 px, internal overviews, same grid and values.

    Categorical rasters (integer with a colour table: masks, clusters, classes, segments) get ``NEAREST``
    overviews so ids never blend; others ``AVERAGE``. Nodata, band descriptions, colour table and tags are
    kept by GDAL's copy.

    Args:
        source: any raster GDAL reads.
        output_path: the ``.tif`` to write (staged, moved into place at the end).
        compression: one of :data:`COG_COMPRESSIONS`.
        feedback: log.
        parameter: the Processing parameter of ``output_path``, named in errors.

    Returns:
        The absolute output path.
    """
    import numpy as np  # lazy: the toolbox lists this algorithm without numpy or rasterio
    from rasterio.shutil import copy as rio_copy

    from .raster import open_raster, raster_env

    feedback = feedback or NullFeedback()
    if compression not in COG_COMPRESSIONS:
        raise InputError(f"unknown compression '{compression}'; use one of {', '.join(COG_COMPRESSIONS)}.",
                         "COMPRESSION")
    if os.path.splitext(output_path)[1].lower() not in (".tif", ".tiff"):
        raise InputError("a Cloud-Optimised GeoTIFF must be written as a .tif file; change the file name.",
                         parameter)
    with raster_env(), open_raster(source) as src:
        categorical = np.issubdtype(np.dtype(src.dtypes[0]), np.integer) and _has_colormap(src)
        resampling = "NEAREST" if categorical else "AVERAGE"
        staged = StagedFile(output_path, parameter=parameter, suffix=".tif")
        with staged as tmp:
            rio_copy(src, tmp, driver="COG", COMPRESS=compression, BLOCKSIZE=512, OVERVIEWS="AUTO",
                     OVERVIEW_RESAMPLING=resampling, RESAMPLING=resampling, BIGTIFF="IF_SAFER")
            staged.commit()
    feedback.info(f"Wrote a Cloud-Optimised GeoTIFF ({compression}, {resampling.lower()} overviews): {output_path}")
    return os.path.abspath(output_path)


def _has_colormap(src) -> bool:
    try:
        return bool(src.colormap(1))
    except ValueError:  # rasterio raises when band 1 has no colour table
        return False
