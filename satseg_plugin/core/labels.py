"""Annotation polygons as per-window label masks (rasterised on demand, never for the whole raster).

Class values: 0 = background, 1..K = the classes, :data:`IGNORE` = pixels that must not count (outside
the area where labels are complete, nodata, padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from affine import Affine
from rasterio.features import rasterize

from .errors import InputError

__all__ = ["IGNORE", "LabelSet"]

IGNORE = 255


def _valid(geometry):
    """``geometry`` if it is a valid (multi)polygon; else its repair (``shapely.make_valid``: a bow-tie becomes two
    triangles) reduced to its polygonal parts (a ring drawn flat repairs to a line, and a collection may hold
    lines or points: they label no area; nothing left: an empty geometry)."""
    import shapely
    from shapely.geometry import MultiPolygon

    if not shapely.is_valid(geometry):
        geometry = shapely.make_valid(geometry)
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [part for part in shapely.get_parts(geometry) if part.geom_type in ("Polygon", "MultiPolygon")]
    return MultiPolygon([poly for part in parts for poly in getattr(part, "geoms", [part])])


@dataclass
class LabelSet:
    """Labelled polygons in the raster's CRS, with an optional AOI where the labels are complete.

    Args:
        geometries: shapely polygons (one per annotated object).
        classes: 1-based class index of each geometry.
        class_names: name of class 1..K (``class_names[k - 1]``).
        aoi: polygons where unlabelled pixels count as background (None: everywhere).
    """

    geometries: Sequence
    classes: Sequence[int]
    class_names: List[str] = field(default_factory=lambda: ["building"])
    aoi: Optional[object] = None

    def __post_init__(self) -> None:
        import shapely

        if len(self.geometries) != len(self.classes):
            raise ValueError("geometries and classes differ in length")
        # hand-drawn polygons cross themselves (a bow-tie, a ring drawn over itself): GEOS refuses to intersect
        # such a geometry, so every invalid one is repaired here, whoever built the set (Processing's reader does
        # so too; scripts and work units may not)
        repaired = [None if g is None else _valid(g) for g in self.geometries]
        keep = [i for i, g in enumerate(repaired) if g is not None and not g.is_empty]
        self.geometries = [repaired[i] for i in keep]
        self.classes = [int(self.classes[i]) for i in keep]
        if not self.geometries:
            raise InputError("the label layer holds no polygons. Draw building polygons (or select a layer "
                             "that has some) and run again.", "LABELS")
        bad = sorted({c for c in self.classes if not 1 <= c <= len(self.class_names)})
        if bad:
            raise InputError(f"class indices {bad} are outside 1..{len(self.class_names)}.", "LABELS")
        self.tree = shapely.STRtree(self.geometries)
        if self.aoi is not None:
            self.aoi = _valid(self.aoi)
            shapely.prepare(self.aoi)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes K."""
        return len(self.class_names)

    def query(self, bounds: Tuple[float, float, float, float]) -> List[int]:
        """Indices of geometries whose envelope meets ``bounds``."""
        from shapely.geometry import box

        return [int(i) for i in self.tree.query(box(*bounds))]

    def rasterize(self, transform: Affine, shape: Tuple[int, int]) -> np.ndarray:
        """Label mask ``(H, W)`` uint8 for a window with geotransform ``transform``.

        Pixels outside the AOI are :data:`IGNORE`. Later polygons win where polygons of different classes overlap.
        """
        height, width = shape
        corners = [transform * c for c in ((0, 0), (width, 0), (0, height), (width, height))]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        hits = self.query((min(xs), min(ys), max(xs), max(ys)))
        out = np.zeros(shape, dtype=np.uint8)
        if hits:
            rasterize(((self.geometries[i], self.classes[i]) for i in sorted(hits)), out_shape=shape,
                      transform=transform, out=out, all_touched=False)
        if self.aoi is not None:
            inside = rasterize([(self.aoi, 1)], out_shape=shape, transform=transform, fill=0, dtype=np.uint8)
            out[inside == 0] = IGNORE
        return out
