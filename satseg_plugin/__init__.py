"""SatSeg: deep-learning segmentation, clustering and population tracking of satellite imagery for QGIS."""


def classFactory(iface):  # QGIS's name
    """Entry point QGIS calls to create the plugin (import kept lazy so start-up stays fast)."""
    import os

    # torch, faiss and GDAL each run OpenMP/thread teams in the one QGIS process; spinning idle OpenMP
    # threads then starve the others (measured: small faiss runs 150x slower beside torch). OpenMP reads
    # this when torch/faiss first load, which SatSeg does lazily, after this point.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .plugin import SatSegPlugin

    return SatSegPlugin(iface)
