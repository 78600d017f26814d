"""SatSeg's QGIS-free core: raster IO, patching, clustering, segmentation, population tracking.

Nothing in this package imports qgis or PyQt (a test enforces it). Heavy packages (rasterio, torch,
faiss) are imported by the modules that need them, which the Processing layer imports lazily.
"""
