"""``satseg:pretrainencoder``: self-supervised (SimCLR) pretraining of a segmentation encoder on one raster."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ....pipelines.segmentation.config import MIN_PRETRAIN_CROP, PretrainConfig
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path
from ...parameters import (
    ENCODER_NAME,
    config_defaults,
    encoder_parameters,
    encoder_value,
    encoder_weights_parameters,
    encoder_weights_value,
)

__all__ = ["PretrainEncoderAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = PretrainConfig


class PretrainEncoderAlgorithm(SatSegAlgorithm):
    """Pretrain a segmentation encoder on random crops of a raster, without labels (SimCLR)."""

    INPUT = "INPUT"
    BANDS = "BANDS"
    ENCODER = "ENCODER"
    ENCODER_NAME = ENCODER_NAME
    ENCODER_WEIGHTS = "ENCODER_WEIGHTS"
    ENCODER_WEIGHTS_FILE = "ENCODER_WEIGHTS_FILE"
    PATCH_SIZE = "PATCH_SIZE"
    VIEW_SIZE = "VIEW_SIZE"
    MIN_SCALE = "MIN_SCALE"
    BATCH_SIZE = "BATCH_SIZE"
    EPOCHS = "EPOCHS"
    BATCHES_PER_EPOCH = "BATCHES_PER_EPOCH"
    LEARNING_RATE = "LEARNING_RATE"
    WEIGHT_DECAY = "WEIGHT_DECAY"
    TEMPERATURE = "TEMPERATURE"
    PROJECTION_DIM = "PROJECTION_DIM"
    SEED = "SEED"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_LOG = "OUTPUT_LOG"
    FINAL_LOSS = "FINAL_LOSS"
    PAIR_ACCURACY = "PAIR_ACCURACY"
    STEPS = "STEPS"

    group_id = "segmentation"
    commits_when_canceled = True  # the engine writes the last finished epoch's encoder on cancel
    requirements = ("numpy", "rasterio", "torch", "torchvision", "segmentation_models_pytorch", "safetensors")

    def name(self) -> str:
        return "pretrainencoder"

    def displayName(self) -> str:
        return self.tr("Pretrain encoder without labels (self-supervised)")

    def tags(self):
        return self.tr("pretrain,self-supervised,contrastive,simclr,encoder,no labels,offline,segmentation").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Teaches a segmentation encoder what your imagery looks like before you have labels, without "
            "downloading anything. Use it when you have only a few drawn polygons and no ImageNet weights (offline), "
            "or imagery unlike photographs (other bands, other scales); then give the model file to Train "
            "segmentation's 'Start from a SatSeg model file' (INIT_WEIGHTS) with the same encoder and bands.\n\n"
            "Contrastive learning (SimCLR): random crops are read from the raster; two views of each crop "
            "(overlapping sub-crops, flips, 90° rotations, brightness/contrast, to-grey, blur) must be recognised "
            "as the same place among the other crops of the batch. The encoder starts from ImageNet weights when "
            "they are cached or reachable ('auto'), else random. The log shows the contrastive loss and the pair "
            "accuracy (share of views whose nearest other view is their partner): both should improve. The defaults "
            "take about five minutes on two CPU cores.\n\n"
            "The model file holds only the encoder (kind 'encoder'), the bands and their normalisation. Cancel "
            "keeps the encoder of the last finished epoch.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterBand(self.BANDS, self.tr("Bands (empty = all but alpha)"), None, self.INPUT,
                                                     optional=True, allowMultiple=True))
        for definition in encoder_parameters(self.ENCODER, self.tr("Encoder"), default["encoder"]):
            self.addParameter(definition)
        for definition in encoder_weights_parameters(self.tr("Initial encoder weights"), default["encoder_weights"]):
            self.addParameter(definition)
        self.addParameter(number(self.EPOCHS, self.tr("Epochs"), number.Integer, default["epochs"], minValue=1))
        self.addParameter(number(self.BATCHES_PER_EPOCH, self.tr("Batches per epoch"), number.Integer,
                                 default["batches_per_epoch"], minValue=1))
        self.addParameter(number(self.SEED, self.tr("Random seed"), number.Integer, default["seed"]))
        self.add_advanced_parameter(number(self.PATCH_SIZE, self.tr("Crop size (pixels)"), number.Integer,
                                           default["patch_size"], minValue=MIN_PRETRAIN_CROP))
        self.add_advanced_parameter(number(self.VIEW_SIZE, self.tr("View size (pixels)"), number.Integer,
                                           default["view_size"], minValue=32))
        self.add_advanced_parameter(number(self.MIN_SCALE, self.tr("Least share of the crop a view covers"),
                                           number.Double, default["min_scale"], minValue=0.01, maxValue=1))
        self.add_advanced_parameter(number(self.BATCH_SIZE, self.tr("Batch size (crops)"), number.Integer,
                                           default["batch_size"], minValue=2))
        self.add_advanced_parameter(number(self.LEARNING_RATE, self.tr("Learning rate"), number.Double,
                                           default["learning_rate"], minValue=0))
        self.add_advanced_parameter(number(self.WEIGHT_DECAY, self.tr("Weight decay"), number.Double,
                                           default["weight_decay"], minValue=0))
        self.add_advanced_parameter(number(self.TEMPERATURE, self.tr("Contrastive temperature"), number.Double,
                                           default["temperature"], minValue=0.001, maxValue=10))
        self.add_advanced_parameter(number(self.PROJECTION_DIM, self.tr("Projection size"), number.Integer,
                                           default["projection_dim"], minValue=1, maxValue=4096))
        self.add_device_parameter()
        self.add_model_destination(self.OUTPUT_MODEL, self.tr("Encoder model file"))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_LOG, self.tr("Pretraining log"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        for key, label in ((self.FINAL_LOSS, "Contrastive loss of the last epoch"),
                           (self.PAIR_ACCURACY, "Pair accuracy of the last epoch"), (self.STEPS, "Batches trained")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.segmentation.pretrain import pretrain_encoder

        layer = self.raster_layer(parameters, self.INPUT, context)
        num, dbl = self.parameterAsInt, self.parameterAsDouble
        config = PretrainConfig(
            encoder=encoder_value(self, parameters, self.ENCODER, context),
            bands=tuple(self.parameterAsInts(parameters, self.BANDS, context)) or None,
            patch_size=num(parameters, self.PATCH_SIZE, context), view_size=num(parameters, self.VIEW_SIZE, context),
            min_scale=dbl(parameters, self.MIN_SCALE, context), batch_size=num(parameters, self.BATCH_SIZE, context),
            epochs=num(parameters, self.EPOCHS, context),
            batches_per_epoch=num(parameters, self.BATCHES_PER_EPOCH, context),
            learning_rate=dbl(parameters, self.LEARNING_RATE, context),
            weight_decay=dbl(parameters, self.WEIGHT_DECAY, context),
            temperature=dbl(parameters, self.TEMPERATURE, context),
            projection_dim=num(parameters, self.PROJECTION_DIM, context),
            encoder_weights=encoder_weights_value(self, parameters, context),
            seed=num(parameters, self.SEED, context))
        model_path = self.model_destination(parameters, self.OUTPUT_MODEL, context, feedback, "encoder")
        log_path = self.parameterAsFileOutput(parameters, self.OUTPUT_LOG, context) or None
        result = pretrain_encoder(raster_path(layer, self.INPUT), model_path, config,
                                  self.device_spec(parameters, context), feedback, log_path,
                                  profile_dir=QgsApplication.qgisSettingsDirPath())
        return {self.OUTPUT_MODEL: result.model_path, self.OUTPUT_LOG: result.log_path,
                self.FINAL_LOSS: result.final_loss, self.PAIR_ACCURACY: result.final_accuracy,
                self.STEPS: result.steps}
