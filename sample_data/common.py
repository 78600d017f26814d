"""What the sample-data generators share: classes, the result types, noise, geometry, and the file formats.

The settlement scene (:mod:`sample_data.scene`) and the region mosaic (:mod:`sample_data.mosaic`) draw
with the same land-cover classes, roof colours and sun, place buildings as the same :class:`Placed`
records and write the same ``scene.tif`` / ``buildings.gpkg`` pair; all of that lives here once.
Geometry is in pixel coordinates (x = column, y = row, pixel (c, r) covers [c, c+1) x [r, r+1)) until
:func:`to_map` moves it onto the map grid.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from scipy import ndimage
from shapely.geometry import LineString, MultiPoint, Polygon, box

SCENE_NAME = "scene.tif"
BUILDINGS_NAME = "buildings.gpkg"
LAYER_NAME = "buildings"

#: Land-cover classes of :attr:`Scene.landcover` (index = class value).
CLASS_NAMES: Tuple[str, ...] = ("grass", "soil", "water", "road", "tree", "building")
GRASS, SOIL, WATER, ROAD, TREE, BUILDING = range(6)

#: Roof colour names (the ``roof`` field of the GeoPackage) and their mean RGB.
ROOF_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "terracotta": (176, 94, 64),
    "red": (146, 60, 50),
    "brown": (120, 92, 72),
    "grey": (150, 150, 148),
    "dark_grey": (78, 80, 86),
    "light": (214, 210, 200),
}
ROOF_WEIGHTS_HOUSE = (0.30, 0.14, 0.14, 0.18, 0.14, 0.10)
ROOF_WEIGHTS_LARGE = (0.08, 0.04, 0.08, 0.36, 0.18, 0.26)

#: Direction *towards* the sun in image coordinates (x = column, y = row, north up): north-west, so
#: shadows fall to the south-east.
SUN = np.array([-1.0, -1.0]) / math.sqrt(2.0)
#: Shadow offset per axis, in metres per metre of object height (sun about 67 degrees high).
SHADOW_PER_M = 0.3

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Building:
    """One building footprint.

    Attributes:
        id: 1-based id, also the GeoPackage FID and the value in :attr:`Scene.roof_labels`.
        roof: Roof colour name, a key of :data:`ROOF_COLOURS`.
        polygon: Footprint in map coordinates of the scene CRS.
        height_m: Eave height used for the cast shadow.
    """

    id: int
    roof: str
    polygon: Polygon
    height_m: float

    @property
    def area_m2(self) -> float:
        """Footprint area in square metres."""
        return float(self.polygon.area)


@dataclass
class Scene:
    """An in-memory scene, as written by :func:`generate_scene`.

    Attributes:
        rgb: ``(3, H, W)`` uint8 image.
        roof_labels: ``(H, W)`` int32, 0 where there is no building, else the building id.
        landcover: ``(H, W)`` uint8 class index into :data:`CLASS_NAMES`.
        buildings: Footprints, ordered by id.
        transform: Affine transform of the grid (north up).
        epsg: EPSG code of the CRS.
        params: The generation parameters (as stored in ``scene.json``).
    """

    rgb: np.ndarray
    roof_labels: np.ndarray
    landcover: np.ndarray
    buildings: List[Building]
    transform: Affine
    epsg: int
    params: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Arguments


@dataclass
class Road:
    """A road in pixel coordinates: its centre line, width (px), main-road flag and surface polygon."""

    line: LineString
    width: float  # px
    main: bool
    polygon: Polygon


@dataclass
class Part:
    """An axis of a building for roof shading: a rectangle in pixel coordinates."""

    cx: float
    cy: float
    hw: float
    hh: float


@dataclass
class Placed:
    """A building placed on the pixel grid, before it becomes a :class:`Building` in map coordinates."""

    poly: Polygon  # pixel coordinates
    cos_a: float
    sin_a: float
    parts: List[Part]
    roof: str
    height_m: float
    driveway: Optional[Any]


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


def check_args(size: Any, pixel_size: Any, seed: Any, epsg: Any, origin: Any) -> Tuple[int, float, int, int,
                                                                                      Tuple[float, float]]:
    """Validate the arguments shared by every generator; returns them as ``(size, pixel_size, seed, epsg, origin)``.

    Raises:
        ValueError: Naming the argument that is invalid and what it must be.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an integer, got {size!r}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    try:
        pixel_size = float(pixel_size)
    except (TypeError, ValueError):
        raise ValueError(f"pixel_size must be a number, got {pixel_size!r}") from None
    if not math.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"pixel_size must be a positive number of metres, got {pixel_size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(epsg, bool) or not isinstance(epsg, (int, np.integer)):
        raise ValueError(f"epsg must be an integer EPSG code, got {epsg!r}")
    try:
        crs = CRS.from_epsg(int(epsg))
    except Exception:  # rasterio raises CRSError; any failure means the code is unusable
        raise ValueError(f"unknown EPSG code {epsg}") from None
    if not crs.is_projected:
        raise ValueError(f"EPSG:{epsg} is not a projected CRS; the scene needs metric map units")
    try:
        ox, oy = (float(v) for v in origin)
    except (TypeError, ValueError):
        raise ValueError(f"origin must be a pair of numbers (x, y), got {origin!r}") from None
    if not (math.isfinite(ox) and math.isfinite(oy)):
        raise ValueError(f"origin must be finite, got {origin!r}")
    return int(size), pixel_size, int(seed), int(epsg), (ox, oy)

def grid_transform(params: Mapping[str, Any]) -> Affine:
    """The north-up grid of validated parameters (``pixel_size``, ``origin`` = top-left corner)."""
    ps = params["pixel_size"]
    ox, oy = params["origin"]
    return Affine(ps, 0.0, ox, 0.0, -ps, oy)


# --------------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------------


def _bspline_matrix(n: int, scale: float) -> np.ndarray:
    """``(n, m)`` matrix that upsamples ``m`` random coefficients to ``n`` samples with a cubic B-spline.

    Rows are normalised so that unit-variance white coefficients give unit-variance output everywhere.
    """
    m = int(math.ceil(n / scale)) + 4
    t = (np.arange(n) + 0.5) / scale + 1.5
    x = np.abs(t[:, None] - np.arange(m)[None, :])
    w = np.where(x < 1.0, 2.0 / 3.0 - x ** 2 + 0.5 * x ** 3, np.where(x < 2.0, (2.0 - x) ** 3 / 6.0, 0.0))
    w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True))
    return w


def smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], scale: float) -> np.ndarray:
    """Unit-variance smooth noise with features about ``scale`` pixels across (float32)."""
    h, w = shape
    if scale <= 1.0:
        return rng.standard_normal(shape, dtype=np.float32)
    if scale < 6.0:
        # Fine grain: a small Gaussian filter of white noise is cheaper than dense spline matrices.
        sigma = 0.5 * scale
        out = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
        kernel = np.exp(-0.5 * (np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        return out / np.float32((kernel ** 2).sum())  # 2-D variance = (sum of squared 1-D weights) ** 2
    my = _bspline_matrix(h, scale)
    mx = _bspline_matrix(w, scale)
    coeff = rng.standard_normal((my.shape[1], mx.shape[1]))
    # float64 products: BLAS summation order then cannot move a value across a threshold in practice.
    return (my @ coeff @ mx.T).astype(np.float32)


def fbm(rng: np.random.Generator, shape: Tuple[int, int], scales: Sequence[float],
         weights: Sequence[float]) -> np.ndarray:
    """Unit-variance sum of smooth noise octaves."""
    out = np.zeros(shape, dtype=np.float32)
    for s, wt in zip(scales, weights):
        out += np.float32(wt) * smooth_noise(rng, shape, s)
    return out / np.float32(math.sqrt(sum(wt * wt for wt in weights)))


# Geometry helpers (pixel coordinates: x = column, y = row, pixel (c, r) covers [c, c+1) x [r, r+1))
# --------------------------------------------------------------------------------------------------


def raster(shapes: Sequence[Any], shape: Tuple[int, int], dtype: str = "uint8",
            transform: Affine = Affine.identity()) -> np.ndarray:
    """Rasterise (pixel-centre rule); an empty list gives zeros."""
    shapes = [s for s in shapes if s is not None and not (getattr(s, "is_empty", False))]
    if not shapes:
        return np.zeros(shape, dtype=dtype)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, all_touched=False, dtype=dtype)


def window_mask(geom: Any, shape: Tuple[int, int], pad: int = 1
                 ) -> Optional[Tuple[Tuple[int, int, int, int], np.ndarray]]:
    """Rasterise ``geom`` into the smallest window of the grid that holds it."""
    h, w = shape
    minx, miny, maxx, maxy = geom.bounds
    c0, r0 = max(int(math.floor(minx)) - pad, 0), max(int(math.floor(miny)) - pad, 0)
    c1, r1 = min(int(math.ceil(maxx)) + pad, w), min(int(math.ceil(maxy)) + pad, h)
    if c1 <= c0 or r1 <= r0:
        return None
    m = rasterize([geom], out_shape=(r1 - r0, c1 - c0), transform=Affine.translation(c0, r0), fill=0,
                  all_touched=False, dtype="uint8").astype(bool)
    return (r0, r1, c0, c1), m


def curve(rng: np.random.Generator, size: int, centre: Tuple[float, float], angle: float, amp: float,
           wavelength: float, half_len: Optional[float] = None, n: int = 160) -> Optional[LineString]:
    """A gently meandering line through ``centre``, clipped to the scene (plus a margin)."""
    half = 1.6 * size if half_len is None else half_len
    s = np.linspace(-half if half_len is None else 0.0, half, n)
    phase1, phase2 = rng.uniform(0, 2 * math.pi, 2)
    off = amp * np.sin(2 * math.pi * s / wavelength + phase1) \
        + 0.25 * amp * np.sin(2 * math.pi * s / (0.37 * wavelength) + phase2)
    if half_len is not None:
        off = off - off[0]  # start exactly at ``centre``
    ux, uy = math.cos(angle), math.sin(angle)
    xs = centre[0] + s * ux - off * uy
    ys = centre[1] + s * uy + off * ux
    margin = 0.05 * size + 8
    clipped = LineString(np.column_stack([xs, ys])).intersection(
        box(-margin, -margin, size + margin, size + margin))
    if clipped.is_empty:
        return None
    if clipped.geom_type != "LineString":
        parts = [g for g in getattr(clipped, "geoms", []) if g.geom_type == "LineString"]
        if not parts:
            return None
        clipped = max(parts, key=lambda g: g.length)
    return clipped if clipped.length > 0 else None


def to_map(geom: Any, transform: Affine) -> Any:
    """Pixel-space geometry to map coordinates (x = x0 + col * a, y = y0 + row * e)."""
    a, e, x0, y0 = transform.a, transform.e, transform.c, transform.f
    return shapely.transform(geom, lambda xy: np.column_stack([x0 + xy[:, 0] * a, y0 + xy[:, 1] * e]))


def place(local: Polygon, cx: float, cy: float, cos_a: float, sin_a: float) -> Polygon:
    """Rotate a local polygon by (cos_a, sin_a) and move it to (cx, cy)."""
    return shapely.transform(local, lambda uv: np.column_stack([cx + uv[:, 0] * cos_a - uv[:, 1] * sin_a,
                                                                cy + uv[:, 0] * sin_a + uv[:, 1] * cos_a]))


def cast_shadow(poly: Polygon, dx: float, dy: float) -> Any:
    """The shadow of a vertical prism over ``poly`` offset by (dx, dy), without the footprint itself."""
    moved = shapely.affinity.translate(poly, dx, dy)
    coords = np.asarray(poly.exterior.coords)
    sweeps = [MultiPoint([tuple(p), tuple(q), (p[0] + dx, p[1] + dy), (q[0] + dx, q[1] + dy)]).convex_hull
              for p, q in zip(coords[:-1], coords[1:])]
    return shapely.union_all([moved] + sweeps).difference(poly)



def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D array by (dy, dx) >= 0 without wrapping."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if dy < h and dx < w:
        out[dy:, dx:] = mask[:h - dy, :w - dx]
    return out



def blend(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: ``img = img * (1 - alpha) + colour * alpha`` (alpha (H, W), colour (3,) or (H, W, 3))."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * colour



# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def ogr_exceptions() -> Iterator[Any]:
    """OGR/OSR with exceptions on, restoring the caller's setting afterwards."""
    from osgeo import ogr, osr

    prev_ogr, prev_osr = ogr.GetUseExceptions(), osr.GetUseExceptions()
    ogr.UseExceptions()
    osr.UseExceptions()
    try:
        yield ogr
    finally:
        # GDAL keeps a stack of error handlers: pop in the reverse order of the pushes.
        if not prev_osr:
            osr.DontUseExceptions()
        if not prev_ogr:
            ogr.DontUseExceptions()


def write_tif(path: str, scene: Scene) -> None:
    """Write ``scene.rgb`` as a tiled, deflate-compressed RGB GeoTIFF on the scene's grid."""
    _, h, w = scene.rgb.shape
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=CRS.from_epsg(scene.epsg),
                   transform=scene.transform, nodata=None, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", photometric="RGB", interleave="pixel")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(scene.rgb)
        for i, name in enumerate(("red", "green", "blue"), start=1):
            dst.set_band_description(i, name)
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def write_polygon_gpkg(path: str, layer_name: str, epsg: Union[int, str], fields: Sequence[Tuple[str, str]],
                        rows: Sequence[Tuple[int, Polygon, Sequence[Any]]]) -> None:
    """Write polygons to a fresh GeoPackage layer.

    Args:
        path: the GeoPackage (replaced when it exists).
        layer_name: the layer.
        epsg: its CRS: an EPSG code, or a WKT string (assigned as it is, nothing is reprojected).
        fields: ``(name, kind)`` with kind ``int``, ``str`` or ``float``.
        rows: ``(fid, polygon, values in fields order)``.
    """
    with ogr_exceptions() as ogr:
        from osgeo import osr

        kinds = {"int": ogr.OFTInteger, "str": ogr.OFTString, "float": ogr.OFTReal}
        driver = ogr.GetDriverByName("GPKG")
        if os.path.exists(path):
            driver.DeleteDataSource(path)
        ds = driver.CreateDataSource(path)
        srs = osr.SpatialReference()
        if isinstance(epsg, str):
            srs.ImportFromWkt(epsg)
        else:
            srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        layer = ds.CreateLayer(layer_name, srs, ogr.wkbPolygon, options=["FID=fid", "GEOMETRY_NAME=geom"])
        for name, kind in fields:
            layer.CreateField(ogr.FieldDefn(name, kinds[kind]))
        defn = layer.GetLayerDefn()
        layer.StartTransaction()
        for fid, polygon, values in rows:
            feat = ogr.Feature(defn)
            feat.SetFID(fid)
            for (name, _kind), value in zip(fields, values):
                feat.SetField(name, value)
            feat.SetGeometry(ogr.CreateGeometryFromWkb(shapely.to_wkb(polygon)))
            layer.CreateFeature(feat)
            feat = None
        layer.CommitTransaction()
        layer = None
        ds = None


def write_buildings_gpkg(path: str, buildings: Sequence[Building], epsg: int) -> None:
    """Write the footprints as layer ``buildings`` (fields ``id``, ``roof``, ``area_m2``; FID = id)."""
    write_polygon_gpkg(path, LAYER_NAME, epsg, (("id", "int"), ("roof", "str"), ("area_m2", "float")),
                        [(b.id, b.polygon, (b.id, b.roof, b.area_m2)) for b in buildings])


def scene_paths(out_dir: PathLike) -> Dict[str, str]:
    """``{"scene": <out_dir>/scene.tif, "buildings": <out_dir>/buildings.gpkg}``."""
    out_dir = os.fspath(out_dir)
    return {"scene": os.path.join(out_dir, SCENE_NAME), "buildings": os.path.join(out_dir, BUILDINGS_NAME)}



def _resolve_paths(out_dir_or_paths: Union[PathLike, Mapping[str, str]]) -> Dict[str, str]:
    if isinstance(out_dir_or_paths, Mapping):
        try:
            return {"scene": os.fspath(out_dir_or_paths["scene"]),
                    "buildings": os.fspath(out_dir_or_paths["buildings"])}
        except KeyError as exc:
            raise ValueError(f"expected a mapping with 'scene' and 'buildings' paths, missing {exc}") from None
    return scene_paths(out_dir_or_paths)


def read_buildings(path: str) -> List[Building]:
    """Read the footprints of a ``buildings.gpkg`` written by :func:`generate_scene`, ordered by id.

    Args:
        path: GeoPackage path.

    Returns:
        The buildings (``height_m`` is not stored and reads as NaN).

    Raises:
        ValueError: If the file or its ``buildings`` layer cannot be opened.
    """
    rows = read_polygon_layer(path, LAYER_NAME, ("id", "roof"))
    out = [Building(int(bid), str(roof), geom, float("nan")) for _, geom, (bid, roof) in rows]
    out.sort(key=lambda b: b.id)
    return out


def building_mask(out_dir_or_paths: Union[PathLike, Mapping[str, str]]) -> np.ndarray:
    """Rasterise the building footprints onto the scene grid (pixel-centre rule).

    Args:
        out_dir_or_paths: The folder given to :func:`generate_scene`, or the dict it returned.

    Returns:
        ``(H, W)`` bool array, True on building pixels; equal to the roofs drawn in ``scene.tif``.

    Raises:
        ValueError: If the files cannot be read.
    """
    paths = _resolve_paths(out_dir_or_paths)
    with rasterio.open(paths["scene"]) as src:
        shape, transform = (src.height, src.width), src.transform
    polys = [b.polygon for b in read_buildings(paths["buildings"])]
    return raster(polys, shape, transform=transform).astype(bool)



def read_polygon_layer(path: str, layer_name: str, fields: Sequence[str]) -> List[Tuple[int, Any, List[Any]]]:
    """Read the polygons of one GeoPackage layer written by :func:`write_polygon_gpkg`.

    Args:
        path: GeoPackage path.
        layer_name: the layer to read.
        fields: names of the fields to return, in this order.

    Returns:
        ``(fid, geometry, field values)`` per feature, in file order.

    Raises:
        ValueError: If the file or the layer cannot be opened.
    """
    with ogr_exceptions() as ogr:
        try:
            ds = ogr.Open(os.fspath(path))
        except RuntimeError as exc:
            raise ValueError(f"cannot open {path}: {exc}") from None
        layer = ds.GetLayerByName(layer_name) if ds is not None else None
        if layer is None:
            raise ValueError(f"{path} has no layer {layer_name!r}")
        rows = []
        for feat in layer:
            geom = shapely.from_wkb(bytes(feat.GetGeometryRef().ExportToWkb()))
            rows.append((int(feat.GetFID()), geom, [feat.GetField(name) for name in fields]))
        layer = None
        ds = None
    return rows


def write_params(path: str, params: Mapping[str, Any]) -> None:
    """Write generation parameters as sorted, indented JSON (written last: its presence marks a complete run)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(params, fh, indent=2, sort_keys=True)
        fh.write("\n")


def params_match(path: str, wanted: Mapping[str, Any]) -> bool:
    """Whether the JSON file at ``path`` holds exactly ``wanted`` (False when it is missing or unreadable)."""
    try:
        with open(path, encoding="utf-8") as fh:
            stored = json.load(fh)
    except (OSError, ValueError):
        return False
    return stored == wanted
