"""Torch modules, losses and the checkpoint format (QGIS-free, imported lazily)."""
