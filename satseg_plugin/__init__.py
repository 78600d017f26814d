"""SatSeg: deep-learning segmentation, clustering and population tracking of satellite imagery for QGIS."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Entry point QGIS calls to create the plugin (import kept lazy so start-up stays fast)."""
    from .plugin import SatSegPlugin

    return SatSegPlugin(iface)
