"""``satseg:trainclusternet``: unsupervised per-pixel features (ClusterNet / DeepCluster) from rasters or patches."""

from __future__ import annotations

from typing import Any, Dict, List

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ....models.registry import ARCHITECTURE_NAMES
from ....pipelines.clustering.pixel.config import ClusterNetConfig
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path
from ...parameters import ENCODER_NAME, architecture_parameter, config_defaults, encoder_parameters, encoder_value

__all__ = ["TrainClusterNetAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = ClusterNetConfig


def parse_bands(text: str, parameter: str) -> List[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; empty -> ``[]`` (all bands)."""
    try:
        bands = [int(b) for b in text.replace(";", ",").split(",") if b.strip()]
    except ValueError as exc:
        raise QgsProcessingException(f"{parameter}: '{text}' is not a comma-separated list of band numbers, "
                                     "e.g. 1,2,3.") from exc
    if any(b < 1 for b in bands):
        raise QgsProcessingException(f"{parameter}: band numbers start at 1.")
    return bands


class TrainClusterNetAlgorithm(SatSegAlgorithm):
    """Train a ClusterNet without labels on one or more rasters (or the patches of a patch index)."""

    INPUT = "INPUT"
    PATCH_INDEX = "PATCH_INDEX"
    PATH_FIELD = "PATH_FIELD"
    BANDS = "BANDS"
    ARCHITECTURE = "ARCHITECTURE"
    ENCODER = "ENCODER"
    ENCODER_NAME = ENCODER_NAME
    FEATURE_DIM = "FEATURE_DIM"
    NUM_CLUSTERS = "NUM_CLUSTERS"
    ROUNDS = "ROUNDS"
    STEPS_PER_ROUND = "STEPS_PER_ROUND"
    BATCH_SIZE = "BATCH_SIZE"
    PATCH_SIZE = "PATCH_SIZE"
    CROPS_PER_ROUND = "CROPS_PER_ROUND"
    SAMPLE_PIXELS = "SAMPLE_PIXELS"
    WHITEN = "WHITEN"
    NORMALIZE = "NORMALIZE"
    BALANCE = "BALANCE"
    BOOTSTRAP = "BOOTSTRAP"
    BAND_SHARE = "BAND_SHARE"
    LEARNING_RATE = "LEARNING_RATE"
    SEED = "SEED"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_LOG = "OUTPUT_LOG"
    OBJECTIVE = "OBJECTIVE"
    FINAL_NMI = "FINAL_NMI"

    group_id = "clustering"
    requirements = ("numpy", "rasterio", "torch", "segmentation_models_pytorch", "safetensors", "faiss", "sklearn")

    def name(self) -> str:
        return "trainclusternet"

    def displayName(self) -> str:
        return self.tr("Train pixel clustering model (ClusterNet)")

    def tags(self):
        return self.tr("cluster,clustering,unsupervised,deepcluster,clusternet,kmeans,faiss,features").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Learns per-pixel features without labels. A size-keeping encoder-decoder (U-Net by default) gives "
            "every pixel 'Learned feature channels' plus its own normalised bands (weighted to carry the 'Share of "
            "the features given to the bands', "
            "0.8, of the feature variance). Each round, the features of "
            "a fresh set of random crops are clustered with faiss k-means (optionally PCA-whitened, L2-normalised), "
            "every pixel takes its cluster as a pseudo-label, the cluster head is re-initialised and the network "
            "is trained with class-balanced cross-entropy (Adam, one optimiser per round). The first round's "
            "pseudo-labels come from k-means on the bands themselves (bootstrap). The log reports per round the "
            "k-means objective, cluster sizes and the NMI with the previous round's assignments (stability).\n\n"
            "Give rasters, or a patch index made by 'Cut raster into patches' (its path field lists the patch "
            "files). The model file (.satseg) holds the weights, the final centroids and the feature transform; "
            "'Cluster raster' applies it.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterMultipleLayers(self.INPUT, self.tr("Input raster(s)"),
                                                               QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.PATCH_INDEX, self.tr("Or a patch index layer"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(self.PATH_FIELD, self.tr("Patch index field with file paths"),
                                                      "path", self.PATCH_INDEX, optional=True))
        self.addParameter(QgsProcessingParameterString(self.BANDS, self.tr("Bands, e.g. 1,2,3 (empty = all but alpha)"),
                                                       optional=True))
        self.addParameter(number(self.NUM_CLUSTERS, self.tr("Number of clusters"), number.Integer,
                                 default["num_clusters"], minValue=2))
        self.addParameter(number(self.FEATURE_DIM, self.tr("Learned feature channels"), number.Integer,
                                 default["feature_dim"], minValue=2))
        self.addParameter(number(self.ROUNDS, self.tr("Rounds (k-means + training)"), number.Integer,
                                 default["rounds"], minValue=1))
        self.addParameter(number(self.SEED, self.tr("Random seed"), number.Integer, default["seed"]))
        self.add_advanced_parameter(architecture_parameter(self.ARCHITECTURE, self.tr("Architecture"),
                                                           default["architecture"]))
        for definition in encoder_parameters(self.ENCODER, self.tr("Encoder"), default["encoder"]):
            self.add_advanced_parameter(definition)
        self.add_advanced_parameter(number(self.STEPS_PER_ROUND, self.tr("Training batches per round"),
                                           number.Integer, default["steps_per_round"], minValue=1))
        self.add_advanced_parameter(number(self.BATCH_SIZE, self.tr("Batch size"), number.Integer,
                                           default["batch_size"], minValue=1))
        self.add_advanced_parameter(number(self.PATCH_SIZE, self.tr("Crop size (pixels)"), number.Integer,
                                           default["patch_size"], minValue=32))
        self.add_advanced_parameter(number(self.CROPS_PER_ROUND, self.tr("Crops per round"), number.Integer,
                                           default["crops_per_round"], minValue=1))
        self.add_advanced_parameter(number(self.SAMPLE_PIXELS, self.tr("Pixels sampled for k-means"),
                                           number.Integer, default["sample_pixels"], minValue=2))
        for key, label, field in ((self.WHITEN, "PCA-whiten features", "whiten"),
                                  (self.NORMALIZE, "L2-normalise features", "normalize"),
                                  (self.BALANCE, "Balance cluster sizes in the loss", "balance"),
                                  (self.BOOTSTRAP, "First round from k-means on the bands", "bootstrap")):
            self.add_advanced_parameter(QgsProcessingParameterBoolean(key, self.tr(label), default[field]))
        self.add_advanced_parameter(number(self.BAND_SHARE, self.tr("Share of the features given to the bands"),
                                           number.Double, default["band_share"], minValue=0.0, maxValue=0.99))
        self.add_advanced_parameter(number(self.LEARNING_RATE, self.tr("Learning rate"), number.Double,
                                           default["learning_rate"], minValue=0))
        self.add_device_parameter()
        self.add_model_destination(self.OUTPUT_MODEL, self.tr("Model file"))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_LOG, self.tr("Round log"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber(self.OBJECTIVE, self.tr("Final k-means objective")))
        self.addOutput(QgsProcessingOutputNumber(self.FINAL_NMI, self.tr("NMI of the last two rounds")))

    def sources(self, parameters: Dict[str, Any], context: QgsProcessingContext) -> List[str]:
        """Raster paths from INPUT and the patch index's path field."""
        paths = [raster_path(layer, self.INPUT)
                 for layer in self.parameterAsLayerList(parameters, self.INPUT, context)]
        index = self.parameterAsSource(parameters, self.PATCH_INDEX, context)
        if index is not None:
            field = self.parameterAsString(parameters, self.PATH_FIELD, context) or "path"
            position = index.fields().lookupField(field)
            if position < 0:
                raise QgsProcessingException(f"{self.PATH_FIELD}: the patch index has no field '{field}'; choose "
                                             "the field that holds the patch file paths.")
            paths += [str(f.attribute(position)) for f in index.getFeatures() if f.attribute(position)]
        if not paths:
            raise QgsProcessingException(f"{self.INPUT}: give at least one raster, or a patch index "
                                         f"({self.PATCH_INDEX}).")
        return paths

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.clustering.pixel.train import ClusterNetConfig, train_clusternet

        num, flag = self.parameterAsInt, self.parameterAsBoolean
        bands = parse_bands(self.parameterAsString(parameters, self.BANDS, context), self.BANDS)
        config = ClusterNetConfig(
            architecture=ARCHITECTURE_NAMES[self.parameterAsEnum(parameters, self.ARCHITECTURE, context)],
            encoder=encoder_value(self, parameters, self.ENCODER, context),
            bands=tuple(bands) or None, feature_dim=num(parameters, self.FEATURE_DIM, context),
            num_clusters=num(parameters, self.NUM_CLUSTERS, context), rounds=num(parameters, self.ROUNDS, context),
            steps_per_round=num(parameters, self.STEPS_PER_ROUND, context),
            batch_size=num(parameters, self.BATCH_SIZE, context), patch_size=num(parameters, self.PATCH_SIZE, context),
            crops_per_round=num(parameters, self.CROPS_PER_ROUND, context),
            sample_pixels=num(parameters, self.SAMPLE_PIXELS, context), whiten=flag(parameters, self.WHITEN, context),
            normalize=flag(parameters, self.NORMALIZE, context), balance=flag(parameters, self.BALANCE, context),
            bootstrap=flag(parameters, self.BOOTSTRAP, context),
            band_share=self.parameterAsDouble(parameters, self.BAND_SHARE, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            seed=num(parameters, self.SEED, context))
        model_path = self.model_destination(parameters, self.OUTPUT_MODEL, context, feedback, "clusternet")
        log_path = self.parameterAsFileOutput(parameters, self.OUTPUT_LOG, context) or None
        result = train_clusternet(self.sources(parameters, context), model_path, config,
                                  self.device_spec(parameters, context), feedback, log_path)
        last = result.rounds[-1]["nmi_previous"] if result.rounds else float("nan")
        return {self.OUTPUT_MODEL: result.model_path, self.OUTPUT_LOG: result.log_path,
                self.OBJECTIVE: result.objective, self.FINAL_NMI: last}
