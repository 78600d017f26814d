"""`make demo`: SatSeg's pipelines on the project's own sample data, through real QGIS.

Writes into the output folder (default ``demo_out/``): every algorithm's outputs, ``demo.qgz`` (a QGIS
project with the result layers styled as SatSeg styles them) and ``demo.png`` (that map rendered with
QGIS's own renderer), so a person can look at the result.

Each pipeline adds one step function to :data:`STEPS`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, "/usr/share/qgis/python/plugins"]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (QgsApplication, QgsMapLayer, QgsMapRendererParallelJob, QgsMapSettings,  # noqa: E402
                       QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsRectangle,
                       QgsVectorLayer)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402

from sample_data.generate import generate_scene  # noqa: E402


class Demo:
    """Shared state of the demo: output folder, project, and the layers to render (top first)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = os.path.abspath(out_dir)
        self.project = QgsProject.instance()
        self.layers: List[QgsMapLayer] = []
        self.data: Dict[str, str] = {}
        self.summary: List[str] = []

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def run(self, alg_id: str, params: dict) -> dict:
        """Run a Processing algorithm with a log-printing feedback and a context bound to the project."""
        import processing

        class Log(QgsProcessingFeedback):
            def pushInfo(self, info):  # noqa: N802
                print(f"    {info}")

            def pushWarning(self, warning):  # noqa: N802
                print(f"    WARNING: {warning}")

        context = QgsProcessingContext()
        context.setProject(self.project)
        print(f"  {alg_id}")
        return processing.run(alg_id, params, context=context, feedback=Log())

    def add(self, layer: QgsMapLayer, style: str = "") -> QgsMapLayer:
        """Add a layer to the project (styled with a bundled SatSeg style if given), drawn above earlier ones."""
        if not layer.isValid():
            raise RuntimeError(f"demo layer {layer.name()} is not valid: {layer.source()}")
        if style:
            from satseg_plugin.processing_provider.styling import style_path

            layer.loadNamedStyle(style_path(style))
        self.project.addMapLayer(layer)
        self.layers.insert(0, layer)
        return layer


def step_sample_data(demo: Demo) -> None:
    """The sample scene: 1024x1024 px RGB at 0.5 m with exact building footprints."""
    paths = generate_scene(os.path.join(ROOT, "sample_data", "generated"), size=1024, seed=0)
    demo.data.update(paths)
    demo.add(QgsRasterLayer(paths["scene"], "Sample scene (0.5 m)"))
    buildings = demo.add(QgsVectorLayer(paths["buildings"] + "|layername=buildings", "Building footprints (truth)"))
    buildings.loadNamedStyle(os.path.join(ROOT, "scripts", "styles", "truth_outline.qml"))


def step_patching(demo: Demo) -> None:
    """satseg:patchraster: 256 px patches with 64 px overlap, and a 6-patch random sample for annotation."""
    result = demo.run("satseg:patchraster", {
        "INPUT": demo.data["scene"], "PATCH_WIDTH": 256, "PATCH_HEIGHT": 256, "STRIDE_X": 192, "STRIDE_Y": 192,
        "EDGE": 0, "OUTPUT_DIR": demo.path("patches"), "OUTPUT_INDEX": demo.path("patch_index.gpkg")})
    print(f"    -> {result['PATCH_COUNT']} patches in {result['OUTPUT_DIR']}")
    sample = demo.run("satseg:patchraster", {
        "INPUT": demo.data["scene"], "PATCH_WIDTH": 128, "PATCH_HEIGHT": 128, "SAMPLE_COUNT": 6, "SEED": 1,
        "OUTPUT_DIR": demo.path("annotation_sample"), "OUTPUT_INDEX": demo.path("annotation_sample.gpkg")})
    demo.add(QgsVectorLayer(result["OUTPUT_INDEX"], "Patch index (256 px, stride 192)"), style="patch_index")
    sample_layer = demo.add(QgsVectorLayer(sample["OUTPUT_INDEX"], "Annotation sample (6 x 128 px)"),
                            style="patch_index")
    symbol = sample_layer.renderer().symbol()
    symbol.symbolLayer(0).setStrokeColor(QColor("#00e5ff"))
    symbol.symbolLayer(0).setStrokeWidth(0.9)


def _half_polygon(demo: Demo, west: bool) -> str:
    """A one-polygon GeoPackage covering the west or east half of the scene (the demo's AOIs)."""
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorFileWriter

    scene = QgsRasterLayer(demo.data["scene"], "scene")
    e = scene.extent()
    mid = (e.xMinimum() + e.xMaximum()) / 2
    rect = QgsRectangle(e.xMinimum(), e.yMinimum(), mid, e.yMaximum()) if west else \
        QgsRectangle(mid, e.yMinimum(), e.xMaximum(), e.yMaximum())
    layer = QgsVectorLayer(f"Polygon?crs={scene.crs().authid()}", "aoi", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(rect))
    layer.dataProvider().addFeatures([feature])
    path = demo.path(f"{'west' if west else 'east'}_half.gpkg")
    QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, demo.project.transformContext(),
                                              QgsVectorFileWriter.SaveVectorOptions())
    return path


def step_segmentation(demo: Demo) -> None:
    """Building segmentation: train a U-Net on the west half, segment the scene, score the unseen east half."""
    west, east = _half_polygon(demo, True), _half_polygon(demo, False)
    buildings = demo.data["buildings"] + "|layername=buildings"
    model = demo.run("satseg:trainsegmentation", {
        "INPUT": demo.data["scene"], "LABELS": buildings, "AOI": west, "ARCHITECTURE": 0, "ENCODER": "resnet18",
        "PATCH_SIZE": 128, "BATCH_SIZE": 16, "EPOCHS": 12, "BATCHES_PER_EPOCH": 10, "PATIENCE": 4, "SEED": 0,
        "OUTPUT_MODEL": demo.path("buildings_unet.satseg"), "OUTPUT_LOG": demo.path("training_log.csv"),
        "OUTPUT_PLOT": demo.path("training_curves.png")})
    seg = demo.run("satseg:segmentraster", {
        "INPUT": demo.data["scene"], "MODELS": [model["OUTPUT_MODEL"]], "TILE_SIZE": 256, "MIN_AREA": 4.0,
        "OUTPUT_PROBABILITY": demo.path("building_probability.tif"), "OUTPUT_MASK": demo.path("building_mask.tif"),
        "OUTPUT_POLYGONS": demo.path("building_polygons.gpkg")})
    score = demo.run("satseg:evaluatesegmentation", {
        "PREDICTION": seg["OUTPUT_MASK"], "REFERENCE_POLYGONS": buildings, "AOI": east,
        "OUTPUT_TABLE": demo.path("evaluation_east_half.gpkg")})
    demo.run("satseg:exportrle", {"INPUT": seg["OUTPUT_MASK"], "TILE_SIZE": 224,
                                  "OUTPUT": demo.path("building_mask_rle.csv")})
    summary = (f"Trained on the west half (best validation Dice {model['BEST_DICE']:.3f}); on the unseen east half: "
               f"Dice {score['DICE']:.3f}, IoU {score['IOU']:.3f}, per-building F1 {score['OBJECT_F1']:.3f}, "
               f"competition tile Dice {score['TILE_DICE']:.3f}")
    print(f"    {summary}")
    demo.summary.append(summary)
    demo.add(QgsRasterLayer(seg["OUTPUT_PROBABILITY"], "Building probability"), style="probability")
    demo.add(QgsVectorLayer(seg["OUTPUT_POLYGONS"], "Segmented buildings"), style="buildings")


STEPS: List[Callable[[Demo], None]] = [step_sample_data, step_patching, step_segmentation]


def render(demo: Demo, png: str, size: int = 1400) -> None:
    """Render the project's layers with QGIS's own map renderer."""
    settings = QgsMapSettings()
    settings.setLayers(demo.layers)
    settings.setDestinationCrs(demo.layers[-1].crs())
    extent = QgsRectangle()
    for layer in demo.layers:
        extent.combineExtentWith(layer.extent())
    extent.grow(extent.width() * 0.02)
    settings.setExtent(extent)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    if not job.renderedImage().save(png, "PNG"):
        raise RuntimeError(f"could not write {png}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_out"))
    args = parser.parse_args(argv)
    app = QgsApplication([], False)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    import satseg_plugin

    plugin = satseg_plugin.classFactory(None)
    plugin.initProcessing()
    demo = Demo(args.out)
    if os.path.isdir(demo.out_dir):
        shutil.rmtree(demo.out_dir)
    os.makedirs(demo.out_dir)
    for step in STEPS:
        started = time.time()
        print(f"[demo] {step.__doc__.splitlines()[0]}")
        step(demo)
        print(f"[demo]   done in {time.time() - started:.1f} s")
    demo.project.setCrs(demo.layers[-1].crs())
    project_file = demo.path("demo.qgz")
    demo.project.write(project_file)
    render(demo, demo.path("demo.png"))
    with open(demo.path("summary.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(demo.summary) + "\n")
    for line in demo.summary:
        print(f"[demo] {line}")
    print(f"[demo] wrote {project_file} and {demo.path('demo.png')}")
    print("[demo] open the project in QGIS:  qgis " + project_file)
    plugin.unload()
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
