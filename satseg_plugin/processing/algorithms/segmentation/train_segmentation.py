"""``satseg:trainsegmentation``: train U-Net / PSPNet / DeepLabV3+ from a raster and annotation polygons."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ....models.registry import ARCHITECTURE_NAMES
from ....pipelines.segmentation.config import SCHEDULES, TrainConfig
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path, source_to_labels, source_to_shapely
from ...parameters import (
    ENCODER_NAME,
    architecture_parameter,
    config_defaults,
    encoder_parameters,
    encoder_value,
    encoder_weights_parameters,
    encoder_weights_value,
)

__all__ = ["TrainSegmentationAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = TrainConfig


class TrainSegmentationAlgorithm(SatSegAlgorithm):
    """Train a building (or multi-class) segmentation model from polygons drawn over a raster."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    AOI = "AOI"
    ARCHITECTURE = "ARCHITECTURE"
    ENCODER = "ENCODER"
    ENCODER_NAME = ENCODER_NAME
    ENCODER_WEIGHTS = "ENCODER_WEIGHTS"
    ENCODER_WEIGHTS_FILE = "ENCODER_WEIGHTS_FILE"
    PATCH_SIZE = "PATCH_SIZE"
    BATCH_SIZE = "BATCH_SIZE"
    EPOCHS = "EPOCHS"
    BATCHES_PER_EPOCH = "BATCHES_PER_EPOCH"
    LEARNING_RATE = "LEARNING_RATE"
    WEIGHT_DECAY = "WEIGHT_DECAY"
    MAX_MINUTES = "MAX_MINUTES"
    SCHEDULE = "SCHEDULE"
    STEP_SIZE = "STEP_SIZE"
    GAMMA = "GAMMA"
    PATIENCE = "PATIENCE"
    VAL_FRACTION = "VAL_FRACTION"
    POSITIVE_PROB = "POSITIVE_PROB"
    AUGMENT = "AUGMENT"
    SEED = "SEED"
    THRESHOLD = "THRESHOLD"
    INIT_WEIGHTS = "INIT_WEIGHTS"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_LOG = "OUTPUT_LOG"
    OUTPUT_PLOT = "OUTPUT_PLOT"
    BEST_DICE = "BEST_DICE"
    BEST_IOU = "BEST_IOU"
    BEST_EPOCH = "BEST_EPOCH"
    EPOCHS_RUN = "EPOCHS_RUN"
    VAL_OBJECT_F1 = "VAL_OBJECT_F1"
    VAL_OBJECTS = "VAL_OBJECTS"
    TRAIN_OBJECTS = "TRAIN_OBJECTS"

    group_id = "segmentation"
    commits_when_canceled = True  # the engine keeps the best model so far on cancel
    requirements = ("numpy", "rasterio", "shapely", "torch", "torchvision", "segmentation_models_pytorch",
                    "safetensors", "matplotlib")

    def name(self) -> str:
        return "trainsegmentation"

    def displayName(self) -> str:
        return self.tr("Train segmentation model")

    def tags(self):
        return self.tr("train,deep learning,unet,pspnet,deeplab,buildings,segmentation,model").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Trains a U-Net, PSPNet or DeepLabV3+ (any segmentation-models-pytorch encoder) from a raster and "
            "polygons you drew (e.g. building footprints). With a class field, each distinct value is a class; "
            "without, all polygons are one class.\n\n"
            "Encoder weights: with a few dozen polygons, start from pretrained weights. 'imagenet' uses the "
            "encoder's published ImageNet weights, downloaded once into SatSeg's cache (<QGIS profile>/python/"
            "satseg_weights, or the folder in the SATSEG_WEIGHTS_DIR environment variable) and read from there "
            "offline afterwards; without network the error names the file to download, its address and the folder "
            "to put it in. 'auto' (default) takes ImageNet weights when they are cached or can be downloaded, else "
            "random ones (the log says which). 'none': random weights. A weights file (.safetensors, or .pth/.pt "
            "holding only tensors) holds an encoder state dict of the same encoder and overrides the choice; "
            "with qgis_process pass ENCODER_WEIGHTS_FILE=path. Rasters with other than 3 bands get the RGB kernel "
            "of the first convolution repeated or cut.\n\n"
            "Start from a SatSeg model file: a segmentation model (same architecture, encoder and bands) gives "
            "every weight; a ClusterNet (satseg:trainclusternet, self-supervised on your raster), a pretrained "
            "encoder (satseg:pretrainencoder) or a scene classifier with the same encoder and bands gives the "
            "encoder's weights (then ENCODER_WEIGHTS is not "
            "used).\n\n"
            "Area of complete labels: only there do unlabelled pixels count as background (default: the whole "
            "raster). Validation is held out spatially: whole blocks of the raster (two patches wide, or one when "
            "the labels cover few blocks) are kept for validation, so the score measures the model on ground it "
            "has not seen. When the raster or the labelled area is too small for two blocks of the patch size, "
            "smaller crops are used (down to 64 px) and the log says so.\n\n"
            "The recipe is made for one raster and a few dozen to a few hundred polygons. Batches of 8 crops; an "
            "epoch is about one pass over the training blocks (20 to 50 batches). Crops around labelled objects "
            "are drawn with the given probability (each class as often as the others), the rest at random, with "
            "random 90° turns and mirrors, small rotations and zoom (0.75-1.33x), gamma/contrast/brightness "
            "changes, blur or noise, a dropped band (4+ bands) and to-grey (3+ bands). Loss: focal (gamma 2) + "
            "soft Dice; AdamW; the learning rate warms up over the first 5 % of the steps and follows a cosine to "
            "zero ('cosine'), or is multiplied by the factor every step size epochs ('step'). The time limit fits "
            "the schedule to the minutes you allow: after the first epochs the time per step is measured and the "
            "schedule shortened so that it ends in time. Early stopping watches a smoothed validation Dice and "
            "never stops before half the schedule. Per-band normalisation is computed from the raster and stored "
            "with the model.\n\n"
            "After training the best model segments the validation blocks whole and the log says how good it is "
            "there (pixel Dice, per-object F1, number of objects) with plain warnings when the labels are too few "
            "or the model too weak, and where to draw more polygons. How many to draw: 50-100 objects spread over "
            "the raster is a good start; under 30 a model rarely works on unseen ground.\n\n"
            "The model file (.satseg) holds the weights in a safe format (no code is ever unpickled) and the "
            "metadata segmentation needs. Cancel keeps the best model so far once an epoch has finished.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterBand(self.BANDS, self.tr("Bands (empty = all but alpha)"), None, self.INPUT,
                                                     optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.LABELS, self.tr("Label polygons"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, self.tr("Class field (empty = one class)"),
                                                      parentLayerParameterName=self.LABELS, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.AOI, self.tr("Area where labels are complete"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(architecture_parameter(self.ARCHITECTURE, self.tr("Architecture"),
                                                 default["architecture"]))
        for definition in encoder_parameters(self.ENCODER, self.tr("Encoder"), default["encoder"]):
            self.addParameter(definition)
        for definition in encoder_weights_parameters(self.tr("Encoder weights"), default["encoder_weights"]):
            self.addParameter(definition)
        self.addParameter(number(self.PATCH_SIZE, self.tr("Patch size (pixels)"), number.Integer,
                                 default["patch_size"], minValue=32))
        self.addParameter(number(self.BATCH_SIZE, self.tr("Batch size"), number.Integer, default["batch_size"],
                                 minValue=1))
        self.addParameter(number(self.EPOCHS, self.tr("Maximum epochs"), number.Integer, default["epochs"],
                                 minValue=1))
        self.addParameter(number(self.MAX_MINUTES, self.tr("Training time limit (minutes, 0 = none)"), number.Double,
                                 default["max_minutes"], minValue=0))
        self.addParameter(number(self.PATIENCE, self.tr("Early-stopping patience (epochs)"), number.Integer,
                                 default["patience"], minValue=1))
        self.addParameter(number(self.VAL_FRACTION, self.tr("Validation share of the raster"), number.Double,
                                 default["val_fraction"], minValue=0.01, maxValue=0.9))
        self.addParameter(number(self.SEED, self.tr("Random seed"), number.Integer, default["seed"]))
        self.add_advanced_parameter(number(self.BATCHES_PER_EPOCH, self.tr("Batches per epoch (0 = about two passes)"),
                                           number.Integer, default["batches_per_epoch"], minValue=0))
        self.add_advanced_parameter(number(self.LEARNING_RATE, self.tr("Learning rate"), number.Double,
                                           default["learning_rate"], minValue=0))
        self.add_advanced_parameter(number(self.WEIGHT_DECAY, self.tr("Weight decay"), number.Double,
                                           default["weight_decay"], minValue=0))
        self.add_advanced_parameter(QgsProcessingParameterEnum(self.SCHEDULE, self.tr("Learning-rate schedule"),
                                                               options=list(SCHEDULES),
                                                               defaultValue=SCHEDULES.index(default["schedule"])))
        self.add_advanced_parameter(number(self.STEP_SIZE, self.tr("Learning-rate step (epochs, 'step' schedule)"),
                                           number.Integer,
                                           default["step_size"], minValue=1))
        self.add_advanced_parameter(number(self.GAMMA, self.tr("Learning-rate factor per step ('step' schedule)"),
                                           number.Double,
                                           default["gamma"], minValue=0))
        self.add_advanced_parameter(number(self.POSITIVE_PROB, self.tr("Probability of a crop around a labelled "
                                                                       "object"),
                                           number.Double, default["positive_prob"], minValue=0, maxValue=1))
        self.add_advanced_parameter(QgsProcessingParameterBoolean(self.AUGMENT, self.tr("Augment (turns, mirrors, "
                                                                                        "zoom, colour, blur)"),
                                                                  default["augment"]))
        self.add_advanced_parameter(number(self.THRESHOLD, self.tr("Probability threshold stored with the model "
                                                                   "(empty = best on the validation blocks)"),
                                           number.Double, optional=True, minValue=0.01, maxValue=0.99))
        self.add_advanced_parameter(QgsProcessingParameterFile(
            self.INIT_WEIGHTS, self.tr("Start from a SatSeg model file (segmentation, ClusterNet, pretrained encoder "
                                       "or scene model)"),
            extension="satseg", optional=True))
        self.add_device_parameter()
        self.add_model_destination(self.OUTPUT_MODEL, self.tr("Model file"))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_LOG, self.tr("Training log"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_PLOT, self.tr("Loss / Dice curves"),
                                                                self.tr("PNG images (*.png)"), optional=True,
                                                                createByDefault=True))
        for key, label in ((self.BEST_DICE, "Best validation Dice"), (self.BEST_IOU, "Best validation IoU"),
                           (self.BEST_EPOCH, "Best epoch"), (self.EPOCHS_RUN, "Epochs run"),
                           (self.VAL_OBJECT_F1, "Per-object F1 on the validation blocks"),
                           (self.VAL_OBJECTS, "Objects in the validation blocks"),
                           (self.TRAIN_OBJECTS, "Labelled objects in the training blocks")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....core.labels import LabelSet
        from ....pipelines.segmentation.train import TrainConfig, train_segmentation

        layer = self.raster_layer(parameters, self.INPUT, context)
        crs = layer.crs()
        geoms, classes, names = source_to_labels(self.parameterAsSource(parameters, self.LABELS, context), crs,
                                                 context, self.LABELS,
                                                 self.parameterAsString(parameters, self.CLASS_FIELD, context),
                                                 feedback=feedback)
        aoi = source_to_shapely(self.parameterAsSource(parameters, self.AOI, context), crs, context, self.AOI)
        labels = LabelSet(geoms, classes, names or ["building"], aoi)
        num = self.parameterAsInt
        config = TrainConfig(
            architecture=ARCHITECTURE_NAMES[self.parameterAsEnum(parameters, self.ARCHITECTURE, context)],
            encoder=encoder_value(self, parameters, self.ENCODER, context),
            bands=tuple(self.parameterAsInts(parameters, self.BANDS, context)) or None,
            patch_size=num(parameters, self.PATCH_SIZE, context), batch_size=num(parameters, self.BATCH_SIZE, context),
            epochs=num(parameters, self.EPOCHS, context),
            batches_per_epoch=num(parameters, self.BATCHES_PER_EPOCH, context),
            learning_rate=self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            weight_decay=self.parameterAsDouble(parameters, self.WEIGHT_DECAY, context),
            step_size=num(parameters, self.STEP_SIZE, context),
            gamma=self.parameterAsDouble(parameters, self.GAMMA, context),
            patience=num(parameters, self.PATIENCE, context),
            max_minutes=self.parameterAsDouble(parameters, self.MAX_MINUTES, context),
            schedule=SCHEDULES[self.parameterAsEnum(parameters, self.SCHEDULE, context)],
            val_fraction=self.parameterAsDouble(parameters, self.VAL_FRACTION, context),
            positive_prob=self.parameterAsDouble(parameters, self.POSITIVE_PROB, context),
            augment=self.parameterAsBoolean(parameters, self.AUGMENT, context),
            seed=num(parameters, self.SEED, context),
            threshold=self.optional_value(parameters, self.THRESHOLD, context, self.parameterAsDouble),
            encoder_weights=encoder_weights_value(self, parameters, context),
            init_weights=self.parameterAsFile(parameters, self.INIT_WEIGHTS, context) or None,
        )
        model_path = self.model_destination(parameters, self.OUTPUT_MODEL, context, feedback)
        log_path = self.parameterAsFileOutput(parameters, self.OUTPUT_LOG, context) or None
        plot_path = self.parameterAsFileOutput(parameters, self.OUTPUT_PLOT, context) or None
        result = train_segmentation(raster_path(layer, self.INPUT), labels, model_path, config,
                                    self.device_spec(parameters, context), feedback,
                                    log_path, plot_path, profile_dir=QgsApplication.qgisSettingsDirPath())
        return {self.OUTPUT_MODEL: result.model_path, self.OUTPUT_LOG: result.log_path,
                self.OUTPUT_PLOT: result.plot_path, self.BEST_DICE: result.best_dice, self.BEST_IOU: result.best_iou,
                self.BEST_EPOCH: result.best_epoch, self.EPOCHS_RUN: result.epochs_run,
                **({self.VAL_OBJECT_F1: result.report.object_f1, self.VAL_OBJECTS: result.report.val_objects,
                    self.TRAIN_OBJECTS: result.report.train_objects} if result.report else {})}
