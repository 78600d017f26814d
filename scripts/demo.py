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
import tempfile
import time
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, "/usr/share/qgis/python/plugins"]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsCoordinateTransformContext,
    QgsDatumTransform,
    QgsMapLayer,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsMapThemeCollection,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsReferencedRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, QVariant
from qgis.PyQt.QtGui import QColor

from sample_data.generate import generate_scene


class Demo:
    """Shared state of the demo: output folder, project, and the layers to render (top first)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = os.path.abspath(out_dir)
        self.project = QgsProject.instance()
        self.layers: List[QgsMapLayer] = []
        self.data: Dict[str, str] = {}
        self.summary: List[str] = []
        #: extra PNG name -> layers (top first) rendered besides demo.png
        self.views: Dict[str, List[QgsMapLayer]] = {}

    def path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    def run(self, alg_id: str, params: dict) -> dict:
        """Run a Processing algorithm with a log-printing feedback and a context bound to the project."""
        import processing

        class Log(QgsProcessingFeedback):
            def pushInfo(self, info):
                print(f"    {info}")

            def pushWarning(self, warning):
                print(f"    WARNING: {warning}")

        context = QgsProcessingContext()
        context.setProject(self.project)
        print(f"  {alg_id}")
        return processing.run(alg_id, params, context=context, feedback=Log())

    def add(self, layer: QgsMapLayer, style: str = "", main_view: bool = True) -> QgsMapLayer:
        """Add a layer to the project (styled with a bundled SatSeg style if given), drawn above earlier ones.

        Layers off the main view are added hidden and rendered in their own PNG (:attr:`views`)."""
        if not layer.isValid():
            raise RuntimeError(f"demo layer {layer.name()} is not valid: {layer.source()}")
        if style:
            from satseg_plugin.processing.styling import load_style

            load_style(layer, style)  # the bundled style, with a legend that matches the map
        self.project.addMapLayer(layer)
        if main_view:
            self.layers.insert(0, layer)
        else:
            self.project.layerTreeRoot().findLayer(layer.id()).setItemVisibilityChecked(False)
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


def _write_polygons(demo: Demo, name: str, polygons: List[tuple]) -> str:
    """A GeoPackage ``name`` in the scene's CRS from ``(QgsGeometry, class or None)`` pairs."""
    from qgis.core import QgsFeature, QgsVectorFileWriter

    crs = QgsRasterLayer(demo.data["scene"], "scene").crs().authid()
    layer = QgsVectorLayer(f"Polygon?crs={crs}&field=class:string", name, "memory")
    features = []
    for geometry, cls in polygons:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(geometry)
        feature.setAttributes([cls])
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    path = demo.path(f"{name}.gpkg")
    QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, demo.project.transformContext(),
                                              QgsVectorFileWriter.SaveVectorOptions())
    return path


def _half_polygon(demo: Demo, west: bool) -> str:
    """A one-polygon GeoPackage covering the west or east half of the scene (the demo's AOIs)."""
    from qgis.core import QgsGeometry

    e = QgsRasterLayer(demo.data["scene"], "scene").extent()
    mid = (e.xMinimum() + e.xMaximum()) / 2
    rect = QgsRectangle(e.xMinimum(), e.yMinimum(), mid, e.yMaximum()) if west else \
        QgsRectangle(mid, e.yMinimum(), e.xMaximum(), e.yMaximum())
    return _write_polygons(demo, f"{'west' if west else 'east'}_half", [(QgsGeometry.fromRect(rect), None)])


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


def _demo_annotations(demo: Demo, buildings: int = 6, background: int = 6) -> str:
    """A few annotations as a user would draw them: some building footprints and background squares (seeded)."""
    import random

    from qgis.core import QgsGeometry, QgsSpatialIndex

    from sample_data.generate import read_buildings

    rng = random.Random(4)
    footprints = read_buildings(demo.data["buildings"])
    chosen = rng.sample(footprints, buildings)
    pairs = [(QgsGeometry.fromWkt(b.polygon.wkt), "building") for b in chosen]
    index = QgsSpatialIndex()
    for i, b in enumerate(footprints):
        index.addFeature(i, QgsGeometry.fromWkt(b.polygon.wkt).boundingBox())
    e = QgsRasterLayer(demo.data["scene"], "scene").extent()
    while len(pairs) < buildings + background:
        x = rng.uniform(e.xMinimum(), e.xMaximum() - 12)
        y = rng.uniform(e.yMinimum(), e.yMaximum() - 12)
        rect = QgsRectangle(x, y, x + 12, y + 12)
        if not index.intersects(rect):
            pairs.append((QgsGeometry.fromRect(rect), "other"))
    return _write_polygons(demo, "cluster_annotations", pairs)


def _class_dice(demo: Demo, class_path: str, class_id: int = 1) -> float:
    """Dice of one class of a class raster against the building footprints (pixel-centre rule)."""
    import rasterio
    from rasterio.features import rasterize

    from sample_data.generate import read_buildings

    with rasterio.open(class_path) as src:
        pred = src.read(1) == class_id
        ref = rasterize([(b.polygon, 1) for b in read_buildings(demo.data["buildings"])], out_shape=pred.shape,
                        transform=src.transform).astype(bool)
    return float(2 * (pred & ref).sum() / max(pred.sum() + ref.sum(), 1))


def step_clustering(demo: Demo) -> None:
    """Pixel clustering: ClusterNet without labels, a cluster raster, classes from 12 drawn polygons, scores."""
    model = demo.run("satseg:trainclusternet", {
        "INPUT": [demo.data["scene"]], "NUM_CLUSTERS": 16, "FEATURE_DIM": 16, "ROUNDS": 5, "STEPS_PER_ROUND": 15,
        "CROPS_PER_ROUND": 24, "SEED": 0, "OUTPUT_MODEL": demo.path("clusternet.satseg"),
        "OUTPUT_LOG": demo.path("clusternet_rounds.csv")})
    clusters = demo.run("satseg:clusterraster", {
        "INPUT": demo.data["scene"], "MODEL": model["OUTPUT_MODEL"], "OUTPUT": demo.path("clusters.tif")})
    buildings = demo.data["buildings"] + "|layername=buildings"
    scores = demo.run("satseg:evaluateclusters", {"INPUT": clusters["OUTPUT"], "REFERENCE": buildings,
                                                  "OUTPUT_TABLE": demo.path("cluster_scores.csv")})
    annotations = _demo_annotations(demo)
    classes = demo.run("satseg:clusterstoclasses", {
        "INPUT": clusters["OUTPUT"], "ANNOTATIONS": annotations, "CLASS_FIELD": "class",
        "RASTER": demo.data["scene"], "MODEL": model["OUTPUT_MODEL"], "OUTPUT": demo.path("classes.tif"),
        "OUTPUT_CLUSTERS": demo.path("clusters_split.tif"), "OUTPUT_POLYGONS": demo.path("class_polygons.gpkg"),
        "OUTPUT_REPORT": demo.path("cluster_decisions.csv")})
    summary = (f"ClusterNet (16 clusters, no labels): best reachable building Dice {scores['BEST_DICE']:.3f}, "
               f"purity {scores['PURITY']:.3f}, NMI {scores['NMI']:.3f}; classes from 12 drawn polygons "
               f"({classes['SPLITS']} cluster(s) split): building Dice {_class_dice(demo, classes['OUTPUT']):.3f}")
    print(f"    {summary}")
    demo.summary.append(summary)
    from satseg_plugin.processing.styling import palette_renderer

    view = []
    for path, title, labels in ((classes["OUTPUT"], "Classes from 12 annotations", {1: "building", 2: "other"}),
                                (clusters["OUTPUT"], "ClusterNet clusters", {i: f"cluster {i}" for i in range(1, 17)})):
        layer = QgsRasterLayer(path, title)
        layer.setRenderer(palette_renderer(layer, labels))
        view.append(demo.add(layer, main_view=False))
    annotation_layer = demo.add(QgsVectorLayer(annotations, "Cluster annotations"), main_view=False)
    annotation_layer.loadNamedStyle(os.path.join(ROOT, "scripts", "styles", "truth_outline.qml"))
    demo.views["clusters.png"] = [annotation_layer] + view


def _scene_annotations(demo: Demo, regions_path: str, boxes: int = 10, side: float = 96.0) -> str:
    """What a person would draw: a few squares over the mosaic, each labelled with the region class under its
    centre, clipped to that region (seeded), in a layer made by satseg:createannotationlayer."""
    import random

    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY

    from sample_data.generate import read_regions

    layer_path = demo.run("satseg:createannotationlayer", {
        "CLASSES": "urban,rural,uninhabited", "CRS": "EPSG:32633", "OUTPUT": demo.path("scene_annotations.gpkg")})
    layer = QgsVectorLayer(layer_path["OUTPUT"], "Scene annotations", "ogr")
    regions = [(QgsGeometry.fromWkt(poly.wkt), cls) for poly, cls in read_regions(regions_path)]
    extent = QgsRasterLayer(demo.data["mosaic"], "mosaic").extent()
    rng = random.Random(7)
    features, seen = [], {}
    while len(features) < boxes:
        x = rng.uniform(extent.xMinimum(), extent.xMaximum() - side)
        y = rng.uniform(extent.yMinimum(), extent.yMaximum() - side)
        square = QgsGeometry.fromRect(QgsRectangle(x, y, x + side, y + side))
        centre = QgsGeometry.fromPointXY(QgsPointXY(x + side / 2, y + side / 2))
        region, cls = next((g, c) for g, c in regions if g.contains(centre))
        if seen.get(cls, 0) >= boxes // 3 + 1:
            continue  # keep the three classes about equally drawn
        seen[cls] = seen.get(cls, 0) + 1
        feature = QgsFeature(layer.fields())
        feature.setGeometry(square.intersection(region))
        feature.setAttribute("class", cls)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer_path["OUTPUT"]


def step_scene_clustering(demo: Demo) -> None:
    """Scene clustering: annotate a mosaic, label patches, mean-teacher classifier, DeepCluster, clusters."""
    from sample_data.generate import generate_mosaic

    mosaic = generate_mosaic(os.path.join(ROOT, "sample_data", "generated", "mosaic"), size=1024, seed=0)
    demo.data["mosaic"] = mosaic["scene"]
    patches = demo.run("satseg:patchraster", {
        "INPUT": mosaic["scene"], "PATCH_WIDTH": 64, "PATCH_HEIGHT": 64, "OUTPUT_DIR": demo.path("mosaic_patches"),
        "OUTPUT_INDEX": demo.path("mosaic_patch_index.gpkg")})
    annotations = _scene_annotations(demo, mosaic["regions"])
    labelled = demo.run("satseg:labelpatches", {
        "PATCH_INDEX": patches["OUTPUT_INDEX"], "ANNOTATIONS": annotations, "CLASS_FIELD": "class",
        "OUTPUT": demo.path("labelled_patches.gpkg")})
    pretrained = demo.run("satseg:pretrainscene", {
        "PATCH_INDEX": labelled["OUTPUT"], "EPOCHS": 12, "BATCH_SIZE": 32, "LEARNING_RATE": 3e-3, "EMA_DECAY": 0.95,
        "RAMPUP": 4, "SEED": 0, "OUTPUT_MODEL": demo.path("scene_classifier.satseg"),
        "OUTPUT_LOG": demo.path("scene_classifier_log.csv"), "OUTPUT": demo.path("predicted_patches.gpkg")})
    clustered = demo.run("satseg:deepcluster", {
        "PATCH_INDEX": pretrained["OUTPUT"], "MODEL": pretrained["OUTPUT_MODEL"], "K": 20, "EPOCHS": 2,
        "PCA_DIM": 16, "K_MIN": 2, "K_MAX": 10, "SEED": 0, "OUTPUT_FEATURES": demo.path("scene_features.safetensors"),
        "OUTPUT_TABLE": demo.path("silhouette.csv"), "OUTPUT_PLOT": demo.path("silhouette.png")})
    city_k = int(clustered["SUGGESTED_CITY_K"] or 2)
    rural_k = int(clustered["SUGGESTED_RURAL_K"] or 2)
    extracted = demo.run("satseg:extractclusters", {
        "PATCH_INDEX": pretrained["OUTPUT"], "FEATURES": clustered["OUTPUT_FEATURES"], "CITY_K": city_k,
        "RURAL_K": rural_k, "SEED": 0, "OUTPUT": demo.path("patch_clusters.gpkg")})
    truth = _patch_truth(mosaic["regions"], pretrained["OUTPUT"])
    summary = (f"Scene classifier from {labelled['LABELLED']} labelled of {patches['PATCH_COUNT']} patches: held-out "
               f"accuracy {pretrained['VAL_ACCURACY']:.3f}, accuracy on every patch against the mosaic's regions "
               f"{truth:.3f}; DeepCluster silhouette peaks: {clustered['SUGGESTED']}")
    print(f"    {summary}")
    demo.summary.append(summary)
    from satseg_plugin.processing.styling import style_annotation_layer

    clusters_layer = QgsVectorLayer(extracted["OUTPUT"], "Patch clusters (urban 1.., rural, uninhabited last)")
    ids = sorted({f["cluster"] for f in clusters_layer.getFeatures()})
    style_annotation_layer(clusters_layer, "cluster", [str(i) for i in ids], value_map=False)
    annotation_layer = QgsVectorLayer(annotations, "Scene annotations")
    style_annotation_layer(annotation_layer, "class", ["urban", "rural", "uninhabited"], value_map=False)
    view = [demo.add(annotation_layer, main_view=False), demo.add(clusters_layer, main_view=False),
            demo.add(QgsRasterLayer(mosaic["scene"], "Mosaic (urban, rural, uninhabited)"), main_view=False)]
    demo.views["scene_clusters.png"] = view


def _patch_truth(regions_path: str, predicted_path: str) -> float:
    """Share of patches whose predicted class is the region class covering most of the patch."""
    from qgis.core import QgsGeometry

    from sample_data.generate import read_regions

    regions = [(QgsGeometry.fromWkt(poly.wkt), cls) for poly, cls in read_regions(regions_path)]
    layer = QgsVectorLayer(predicted_path, "predicted")
    hits = total = 0
    for feature in layer.getFeatures():
        geom = feature.geometry()
        best = max(regions, key=lambda r: r[0].intersection(geom).area())[1]
        hits += best == feature["pred_class"]
        total += 1
    return hits / max(total, 1)


def step_population(demo: Demo) -> None:
    """Population tracking: optical flow, communities per frame and tracks on the generated 5-frame series."""
    import glob

    import numpy as np
    import rasterio

    from sample_data.population import generate_population_series, population_paths, read_true_links
    from satseg_plugin.pipelines.population.accuracy import link_accuracy

    folder = os.path.join(ROOT, "sample_data", "generated", "population")
    generate_population_series(folder)
    truth = population_paths(folder)
    frames = sorted(glob.glob(os.path.join(folder, "pop_t*.tif")))
    flow = demo.run("satseg:opticalflow", {
        "FRAMES": frames, "PYRAMID_LEVELS": 3, "VECTOR_STEP": 6, "OUTPUT_DIR": demo.path("flow"),
        "OUTPUT_VECTORS": demo.path("flow_arrows.gpkg")})
    comm = demo.run("satseg:populationclusters", {
        "FRAMES": frames, "FLOWS": flow["FLOWS"], "POP_MIN": 20.0, "REPORT_K": True, "K_MIN": 2, "K_MAX": 12,
        "SEED": 0, "OUTPUT_DIR": demo.path("segments"), "OUTPUT_COMMUNITIES": demo.path("communities.gpkg"),
        "OUTPUT_REPORT": demo.path("communities_report.csv")})
    track = demo.run("satseg:trackcommunities", {
        "SEGMENTS": comm["SEGMENTS"], "FLOWS": flow["FLOWS"], "FRAMES": frames,
        "COMMUNITIES": comm["OUTPUT_COMMUNITIES"], "OUTPUT_LINKS": demo.path("links.gpkg"),
        "OUTPUT_TRACKS": demo.path("tracks.gpkg"), "OUTPUT_COMMUNITIES": demo.path("tracked_communities.gpkg")})
    # scores against the generator's truth: flow end-point error inside communities, links found
    epe = []
    for t, path in enumerate(flow["FLOWS"]):
        with rasterio.open(path) as est, rasterio.open(truth[f"flow_true_t{t}"]) as true:
            inside = np.isfinite(true.read(1)) & (rasterio.open(truth[f"communities_t{t}"]).read(1) > 0)
            epe.append(float(np.hypot(*(est.read()[:, inside] - true.read()[:, inside])).mean()))
    links = QgsVectorLayer(track["OUTPUT_LINKS"])
    pred = [(f["frame"], f["segment"], f["next_frame"], f["next_segment"], f["event"], f["score"])
            for f in links.getFeatures()]
    pred = [tuple(None if v is None or isinstance(v, QVariant) else v for v in row) for row in pred]  # NULL
    acc = link_accuracy(pred, read_true_links(truth["links_true"]),
                        [rasterio.open(p).read(1) for p in comm["SEGMENTS"]],
                        [rasterio.open(truth[f"communities_t{t}"]).read(1) for t in range(len(frames))])
    summary = (f"Population tracking on {len(frames)} frames: flow end-point error {np.mean(epe):.2f} px inside "
               f"communities; {comm['COMMUNITIES']} communities, autoencoder MSE {comm['AE_MSE']:.1e}; "
               f"{track['TRACKS']} tracks; true links found {acc.found}/{acc.true_links} "
               f"(recall {acc.recall:.2f}), false links {acc.false_links}, events right {acc.events_correct}/"
               f"{acc.events_total}")
    print(f"    {summary}")
    demo.summary.append(summary)
    last = len(frames) - 1
    tracked = QgsVectorLayer(track["OUTPUT_COMMUNITIES"], f"Communities of frame {last} by track")
    tracked.setSubsetString(f'"frame" = {last}')
    arrows = QgsVectorLayer(flow["OUTPUT_VECTORS"], "Flow arrows (last pair)")
    arrows.setSubsetString(f'"pair" = {last - 1} AND "u_px" * "u_px" + "v_px" * "v_px" > 0.09')  # > 0.3 px/frame
    population = QgsRasterLayer(frames[last], f"Population, frame {last}")
    _population_ramp(population)
    view = [demo.add(QgsVectorLayer(track["OUTPUT_TRACKS"], "Tracks (by event)"), style="tracks", main_view=False),
            demo.add(arrows, style="flow_arrows", main_view=False),
            demo.add(tracked, style="communities", main_view=False),
            demo.add(population, main_view=False)]
    demo.views["population.png"] = view


def _population_ramp(layer: QgsRasterLayer) -> None:
    """White (empty) to dark red (the densest 0.5 %) pseudocolour, nodata (sea) transparent."""
    import numpy as np
    import rasterio
    from qgis.core import QgsColorRampShader, QgsRasterShader, QgsSingleBandPseudoColorRenderer, QgsStyle

    with rasterio.open(layer.source()) as src:
        values = src.read(1, masked=True).astype("float64").filled(np.nan)
    finite = values[np.isfinite(values)]  # nodata and NaN out: a NaN top gave the legend "nan ... nan"
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    top = top if top > 0 else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    ramp = QgsStyle().defaultStyle().colorRamp("Reds")
    shader = QgsColorRampShader(0.0, top, ramp, QgsColorRampShader.Interpolated)
    shader.classifyColorRamp(5, -1)
    raster_shader = QgsRasterShader(0.0, top)
    raster_shader.setRasterShaderFunction(shader)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, raster_shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(top)
    layer.setRenderer(renderer)


#: Layer-tree groups (unticked) and map themes of the views beside the main map, by PNG name.
VIEW_TITLES = {"clusters.png": "Pixel clusters", "scene_clusters.png": "Scene clusters",
               "population.png": "Population tracking (own area, EPSG:3035)"}


def organise_project(demo: Demo) -> QgsRectangle:
    """Make demo.qgz open well in a fresh QGIS profile (issue 18): each view beside the main map in its own
    unticked group (layers top first, results above their backgrounds) and map theme; the main map's extent
    saved as the project's view and full extent (the population layers lie far away in another CRS); and one
    coordinate operation fixed per CRS pair, so QGIS asks no "Select Transformation" question. Returns the
    main map's extent (project CRS)."""
    project, root = demo.project, demo.project.layerTreeRoot()
    themes = project.mapThemeCollection()

    def theme(name: str, layers: List[QgsMapLayer]) -> None:
        record = QgsMapThemeCollection.MapThemeRecord()
        record.setLayerRecords([QgsMapThemeCollection.MapThemeLayerRecord(layer) for layer in layers])
        themes.insert(name, record)

    def move(layers: List[QgsMapLayer], parent) -> None:
        """Put the nodes of ``layers`` (top first) into ``parent``, in that order, at its top."""
        for index, layer in enumerate(layers):
            node = root.findLayer(layer.id())
            clone = node.clone()
            parent.insertChildNode(index, clone)
            node.parent().removeChildNode(node)

    for index, (name, layers) in enumerate(demo.views.items()):
        group = root.insertGroup(index, VIEW_TITLES.get(name, name[:-4]))
        move(layers, group)
        for layer in layers:
            group.findLayer(layer.id()).setItemVisibilityChecked(True)
        group.setItemVisibilityChecked(False)
        group.setExpanded(False)
        theme(VIEW_TITLES.get(name, name[:-4]), layers)
    move(demo.layers, root)
    if demo.layers:
        theme("Main map", demo.layers)
    context = QgsCoordinateTransformContext(project.transformContext())
    for layer in project.mapLayers().values():
        source, target = layer.crs(), project.crs()
        if source.isValid() and source != target:
            operations = [op for op in QgsDatumTransform.operations(source, target) if op.isAvailable]
            if len(operations) > 1:  # QGIS would ask which one; take the one it lists first (its preferred)
                context.addCoordinateOperation(source, target, operations[0].proj)
    project.setTransformContext(context)
    extent = QgsRectangle()
    for layer in demo.layers:
        extent.combineExtentWith(layer.extent() if layer.crs() == project.crs() else QgsRectangle())
    if not extent.isEmpty():
        extent.grow(extent.width() * 0.02)
        project.viewSettings().setDefaultViewExtent(QgsReferencedRectangle(extent, project.crs()))
        project.viewSettings().setPresetFullExtent(QgsReferencedRectangle(extent, project.crs()))
    return extent


STEPS: List[Callable[[Demo], None]] = [step_sample_data, step_patching, step_segmentation, step_clustering,
                                       step_scene_clustering, step_population]


def render(layers: List[QgsMapLayer], png: str, size: int = 1400) -> None:
    """Render layers (top first) with QGIS's own map renderer."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    extent = QgsRectangle()
    for layer in layers:
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


def use_an_installed_font(app: QgsApplication) -> None:
    """Offscreen Qt's default font is "DejaVu LGC Sans", a name the font database does not hold; labels styled
    here would carry it into demo.qgz and QGIS desktop would warn that the font is missing. Use an installed
    sans-serif family instead."""
    from qgis.PyQt.QtGui import QFont, QFontDatabase

    families = set(QFontDatabase().families())
    if app.font().family() in families:
        return
    for family in ("DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans", "Arial"):
        if family in families:
            app.setFont(QFont(family, app.font().pointSize()))
            return


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_out"))
    parser.add_argument("--only", nargs="+", metavar="STEP", choices=[s.__name__[5:] for s in STEPS],
                        help="run only these steps (developers; e.g. --only scene_clustering)")
    args = parser.parse_args(argv)
    app = QgsApplication([], False)
    app.initQgis()
    use_an_installed_font(app)
    from processing.core.Processing import Processing

    Processing.initialize()
    import satseg_plugin

    plugin = satseg_plugin.classFactory(None)
    plugin.initProcessing()
    demo = Demo(args.out)
    if os.path.isdir(demo.out_dir):
        shutil.rmtree(demo.out_dir)
    os.makedirs(demo.out_dir)
    for step in [s for s in STEPS if not args.only or s.__name__[5:] in args.only]:
        started = time.time()
        print(f"[demo] {step.__doc__.splitlines()[0]}")
        step(demo)
        print(f"[demo]   done in {time.time() - started:.1f} s")
    any_layers = demo.layers or next(iter(demo.views.values()))
    demo.project.setCrs(any_layers[-1].crs())
    organise_project(demo)
    project_file = demo.path("demo.qgz")
    demo.project.write(project_file)
    temporary = [layer.name() for layer in demo.project.mapLayers().values() if layer.isTemporary()]
    if temporary:  # QGIS counts every layer under the system's temporary folder as temporary
        print(f"[demo] note: QGIS will ask about {len(temporary)} temporary layers when demo.qgz closes: they lie "
              f"in the temporary folder {tempfile.gettempdir()}; give --out a folder outside it to keep them.")
    if demo.layers:
        render(demo.layers, demo.path("demo.png"))
    for name, layers in demo.views.items():
        render(layers, demo.path(name))
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
