"""The satseg provider inside real QGIS."""

from qgis.core import QgsApplication


def test_provider_registered_with_algorithms(qgis_app):
    provider = QgsApplication.processingRegistry().providerById("satseg")
    assert provider is not None
    assert provider.name() == "SatSeg" and "satellite" in provider.longName()
    assert not provider.icon().isNull()
    algs = {a.id(): a for a in provider.algorithms()}
    assert "satseg:patchraster" in algs
    for alg in algs.values():
        assert alg.name() == alg.name().lower() and alg.groupId() in ("patching", "clustering", "segmentation",
                                                                      "population", "export")
        assert alg.shortHelpString() and alg.displayName()
        assert not alg.icon().isNull()


def test_each_pipeline_has_its_own_toolbox_icon(qgis_app):
    import os

    from satseg_plugin.processing.base import GROUPS, ICON_PATH, group_icon_path

    paths = {group: group_icon_path(group) for group in GROUPS}
    assert all(os.path.isfile(p) and p != ICON_PATH for p in paths.values())
    assert len(set(paths.values())) == len(GROUPS)
    assert group_icon_path("no such group") == ICON_PATH


def test_plugin_menu_and_unload(qgis_app, session_plugin):
    """initGui builds the SatSeg menu in a real main window; unload removes menu and provider."""
    from qgis.PyQt.QtWidgets import QMainWindow

    import satseg_plugin

    class Iface:
        def __init__(self):
            self.window = QMainWindow()
            self.help = self.window.menuBar().addMenu("Help")

        def mainWindow(self):
            return self.window

        def helpMenu(self):
            return self.help

    iface = Iface()
    registry = QgsApplication.processingRegistry()
    session_plugin.unload()
    assert registry.providerById("satseg") is None
    plugin = satseg_plugin.classFactory(iface)
    plugin.initGui()
    try:
        titles = [a.text() for a in iface.window.menuBar().actions()]
        assert titles == ["&SatSeg", "Help"]
        entries = [a.objectName() for a in plugin.menu.actions()]
        assert "mActionSatSeg_patchraster" in entries and "mActionSatSegAbout" in entries
        assert registry.providerById("satseg") is not None
    finally:
        plugin.unload()
    assert registry.providerById("satseg") is None
    session_plugin.initProcessing()
