"""Fail loudly if the environment cannot run SatSeg inside QGIS (called by `make install`).

Besides importing everything, it loads the system GEOS the way the QGIS binaries do (globally, first)
and checks that shapely and rasterio still work: pip wheels with their own GEOS/GDAL do not.
"""

import ctypes
import ctypes.util
import sys

geos = ctypes.util.find_library("geos_c")
if geos:
    ctypes.CDLL(geos, mode=ctypes.RTLD_GLOBAL)
import faiss  # noqa: F401
import osgeo.gdal
import qgis.core  # noqa: F401
import rasterio
import segmentation_models_pytorch  # noqa: F401
import shapely
import sklearn  # noqa: F401
import torch
from shapely.geometry import box

problems = []
if shapely.from_wkb(box(0, 0, 1, 1).wkb).wkt != "POLYGON ((1 0, 1 1, 0 1, 0 0, 1 0))":
    problems.append("shapely is broken next to QGIS's GEOS: reinstall it with --no-binary shapely")
if rasterio.__gdal_version__ != osgeo.gdal.__version__:
    problems.append(f"rasterio uses GDAL {rasterio.__gdal_version__}, QGIS uses {osgeo.gdal.__version__}: "
                    "reinstall it with --no-binary rasterio")
if problems:
    sys.exit("SatSeg environment NOT OK:\n  " + "\n  ".join(problems))
print(f"SatSeg environment OK: QGIS GDAL {osgeo.gdal.__version__}, shapely {shapely.__version__} on GEOS "
      f"{shapely.geos_version_string}, torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
