"""``satseg:trackcommunities``: link communities across frames by flow; events and track ids."""

from __future__ import annotations

from typing import Any, Dict, List

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
)

from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import qgis_crs, raster_paths, write_features
from ...parameters import COMMUNITY_FIELDS
from ...styling import apply_style_on_load

__all__ = ["TrackCommunitiesAlgorithm"]

LINK_FIELDS = (("frame", "int"), ("segment", "int"), ("next_frame", "int"), ("next_segment", "int"),
               ("score", "float"), ("overlap", "int"), ("event", "str"), ("track_id", "int"))
LINE_FIELDS = (("track_id", "int"), ("frame", "int"), ("segment", "int"), ("next_frame", "int"),
               ("next_segment", "int"), ("event", "str"), ("from_name", "str"), ("to_name", "str"))
COMPARE_OPTIONS = ("same", "next")


class TrackCommunitiesAlgorithm(SatSegAlgorithm):
    """Links, events and track ids of communities across frames."""

    SEGMENTS = "SEGMENTS"
    FLOWS = "FLOWS"
    FRAMES = "FRAMES"
    COMMUNITIES = "COMMUNITIES"
    MIN_OVERLAP = "MIN_OVERLAP"
    MIN_FRACTION = "MIN_FRACTION"
    COMPARE = "COMPARE"
    OUTPUT_LINKS = "OUTPUT_LINKS"
    OUTPUT_TRACKS = "OUTPUT_TRACKS"
    OUTPUT_COMMUNITIES = "OUTPUT_COMMUNITIES"
    TRACKS = "TRACKS"
    LINKS = "LINKS"

    group_id = "population"
    requirements = ("numpy", "rasterio", "shapely")

    def name(self) -> str:
        return "trackcommunities"

    def displayName(self) -> str:
        return self.tr("Track communities")

    def tags(self):
        return self.tr("population,community,tracking,split,merge,birth,death,track").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Links the communities of each frame to those of the next. Every pixel of a community is moved by the "
            "flow; where it lands in a community of the next frame, the pair scores the cosine between the two "
            "flow vectors ('Compare the flow with': the same pair's flow at the landing pixel, or the next pair's "
            "flow, the original rule, which loses merges); a backward pass does the same from the next frame. A "
            "pair is linked when its mean score is positive and it covers at least the 'Minimum share of the "
            "smaller community' (and the 'Minimum overlap' in pixels). All pairs are counted in one sparse pass "
            "over the pixels.\n\n"
            "Events: continue, split (one community to several), merge (several to one), split+merge, birth (no "
            "link from the previous frame) and death (no link to the next). Track ids follow the strongest links: "
            "in a split the strongest child keeps the track, in a merge the merged community keeps the strongest "
            "parent's track.\n\n"
            "Outputs: the link table, lines joining community centroids along the links (styled by event) and, "
            "with 'Community polygons' (from 'Population communities'), those polygons with a track_id.")

    def initAlgorithm(self, config=None):
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterMultipleLayers(self.SEGMENTS, self.tr("Segment rasters, in time order"),
                                                               QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.FLOWS, self.tr("Flow rasters, in time order"),
                                                               QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterFeatureSource(self.COMMUNITIES, self.tr(
            "Community polygons (to add track ids)"), [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.FRAMES, self.tr(
            "Population frames (population-weighted centroids)"), QgsProcessing.TypeRaster, optional=True))
        self.add_advanced_parameter(number(self.MIN_OVERLAP, self.tr("Minimum overlap (pixels)"), number.Integer, 1,
                                           minValue=1))
        self.add_advanced_parameter(number(self.MIN_FRACTION, self.tr("Minimum share of the smaller community"),
                                           number.Double, 0.2, minValue=0.0, maxValue=1.0))
        self.add_advanced_parameter(QgsProcessingParameterEnum(self.COMPARE, self.tr("Compare the flow with"),
                                                               options=[self.tr("the same pair's flow"),
                                                                        self.tr("the next pair's flow (original)")],
                                                               defaultValue=0))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_LINKS, self.tr("Links"),
                                                            QgsProcessing.TypeVector))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_TRACKS, self.tr("Track lines"),
                                                            QgsProcessing.TypeVectorLine))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_COMMUNITIES, self.tr("Tracked communities"),
                                                            QgsProcessing.TypeVectorPolygon, optional=True))
        self.addOutput(QgsProcessingOutputNumber(self.TRACKS, self.tr("Number of tracks")))
        self.addOutput(QgsProcessingOutputNumber(self.LINKS, self.tr("Number of links")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        import shapely

        from ....pipelines.population.run import run_tracking

        frames = (raster_paths(self, parameters, self.FRAMES, context)
                  if self.parameterAsLayerList(parameters, self.FRAMES, context) else None)
        run = run_tracking(raster_paths(self, parameters, self.SEGMENTS, context),
                           raster_paths(self, parameters, self.FLOWS, context), frames,
                           min_overlap=self.parameterAsInt(parameters, self.MIN_OVERLAP, context),
                           min_fraction=self.parameterAsDouble(parameters, self.MIN_FRACTION, context),
                           compare=COMPARE_OPTIONS[self.parameterAsEnum(parameters, self.COMPARE, context)],
                           feedback=feedback)
        tracking, crs = run.tracking, qgis_crs(run.crs)

        def track_of(frame: int, segment) -> Any:
            return None if segment is None else tracking.track_ids[frame].get(int(segment))

        link_rows = [(None, [lk.frame, lk.segment, lk.next_frame, lk.next_segment, float(lk.score), int(lk.overlap),
                             lk.event, track_of(lk.next_frame, lk.next_segment) if lk.next_segment is not None
                             else track_of(lk.frame, lk.segment)]) for lk in tracking.links]
        outputs: Dict[str, Any] = {self.TRACKS: tracking.num_tracks, self.LINKS: len(tracking.links)}
        outputs[self.OUTPUT_LINKS] = write_features(self, parameters, self.OUTPUT_LINKS, context, LINK_FIELDS, "None",
                                                    crs, link_rows)
        line_rows = []
        for line in tracking.lines:
            start = run.centroids[line.frame].get(line.segment)
            end = run.centroids[line.next_frame].get(line.next_segment)
            if start is None or end is None:
                continue
            line_rows.append((shapely.LineString([start, end]),
                              [line.track_id, line.frame, line.segment, line.next_frame, line.next_segment, line.event,
                               run.frame_names[line.frame], run.frame_names[line.next_frame]]))
        tracks = write_features(self, parameters, self.OUTPUT_TRACKS, context, LINE_FIELDS, "LineString", crs,
                                line_rows)
        outputs[self.OUTPUT_TRACKS] = tracks
        apply_style_on_load(context, tracks, "tracks", self.tr("Tracks"))
        source = self.parameterAsSource(parameters, self.COMMUNITIES, context)
        if source is not None and parameters.get(self.OUTPUT_COMMUNITIES) is not None:
            outputs[self.OUTPUT_COMMUNITIES] = self._tracked_polygons(parameters, context, source, tracking, crs)
        return outputs

    def _tracked_polygons(self, parameters, context, source, tracking, crs) -> str:
        """Copy the community polygons with a ``track_id`` looked up by (frame, segment_id)."""
        import shapely

        names = source.fields().names()
        if "frame" not in names or "segment_id" not in names:
            raise QgsProcessingException(f"{self.COMMUNITIES}: the layer needs the fields 'frame' and 'segment_id' "
                                         "(the community polygons of 'Population communities').")
        wanted = [name for name, _kind in COMMUNITY_FIELDS if name in names]
        kinds = dict(COMMUNITY_FIELDS)
        rows: List = []
        for feature in source.getFeatures(QgsFeatureRequest()):
            frame, segment = feature["frame"], feature["segment_id"]
            if frame is None or segment is None or not 0 <= int(frame) < len(tracking.track_ids):
                continue
            geom = feature.geometry()
            shape = None if geom.isNull() else shapely.from_wkb(bytes(geom.asWkb()))
            rows.append((shape, [feature[n] for n in wanted] + [tracking.track_ids[int(frame)].get(int(segment))]))
        fields = [(n, kinds[n]) for n in wanted] + [("track_id", "int")]
        dest = write_features(self, parameters, self.OUTPUT_COMMUNITIES, context, fields, "MultiPolygon", crs, rows)
        apply_style_on_load(context, dest, "communities", self.tr("Tracked communities"))
        return dest
