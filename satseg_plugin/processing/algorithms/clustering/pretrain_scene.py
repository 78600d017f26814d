"""``satseg:pretrainscene``: semi-supervised scene classifier (mean teacher) over labelled and unlabelled patches."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsFields,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from ....pipelines.clustering.scene.config import SceneTrainConfig
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import qgs_field
from ...parameters import config_defaults
from ...scene_inputs import fraction_classes, index_features, patch_paths, soft_label_matrix
from ...styling import apply_annotation_style_on_load

__all__ = ["PretrainSceneAlgorithm"]

#: The engine's settings class, whose field defaults are the parameters' defaults.
CONFIG = SceneTrainConfig


class PretrainSceneAlgorithm(SatSegAlgorithm):
    """Train a ResNet-18 scene classifier from soft patch labels with a mean teacher."""

    PATCH_INDEX = "PATCH_INDEX"
    PATH_FIELD = "PATH_FIELD"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    EMA_DECAY = "EMA_DECAY"
    CONSISTENCY = "CONSISTENCY"
    RAMPUP = "RAMPUP"
    VAL_FRACTION = "VAL_FRACTION"
    LOOKAHEAD = "LOOKAHEAD"
    AUGMENT = "AUGMENT"
    SEED = "SEED"
    INIT_WEIGHTS = "INIT_WEIGHTS"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    OUTPUT_LOG = "OUTPUT_LOG"
    OUTPUT = "OUTPUT"
    VAL_ACCURACY = "VAL_ACCURACY"

    group_id = "clustering"
    requirements = ("numpy", "rasterio", "shapely", "torch", "torchvision", "safetensors")

    def name(self) -> str:
        return "pretrainscene"

    def displayName(self) -> str:
        return self.tr("Train scene classifier (mean teacher)")

    def tags(self):
        return self.tr("scene,classify,urban,rural,uninhabited,resnet,mean teacher,semi-supervised").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Trains a ResNet-18 (random initial weights, or a SatSeg scene model you give) to classify patches "
            "from the soft labels 'Label patches from annotations' wrote (frac_<class> fields). Semi-supervised "
            "mean teacher: the teacher is an exponential moving average of the student (decay 0.999); on every "
            "patch, labelled or not, the student is pulled towards the teacher under different augmentations "
            "(consistency weight 12.5, sigmoid ramp-up over 20 epochs); labelled patches add a soft-label "
            "cross-entropy. RAdam with Lookahead; flips, 90° rotations, colour jitter and to-grey. A seeded, "
            "class-stratified share of the labelled patches is held out: its accuracy picks the best teacher.\n\n"
            "Outputs: the model file and a copy of the index with pred_class and prob_<class> for every patch.")

    def initAlgorithm(self, config=None):
        number, default = QgsProcessingParameterNumber, config_defaults(CONFIG)
        self.addParameter(QgsProcessingParameterFeatureSource(self.PATCH_INDEX, self.tr("Labelled patch index"),
                                                              [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.PATH_FIELD, self.tr("Field with patch file paths"), "path",
                                                      self.PATCH_INDEX, optional=True))
        self.addParameter(number(self.EPOCHS, self.tr("Epochs"), number.Integer, default["epochs"], minValue=1))
        self.addParameter(number(self.SEED, self.tr("Random seed"), number.Integer, default["seed"]))
        self.add_advanced_parameter(number(self.BATCH_SIZE, self.tr("Batch size"), number.Integer,
                                           default["batch_size"], minValue=1))
        self.add_advanced_parameter(number(self.LEARNING_RATE, self.tr("Learning rate"), number.Double,
                                           default["learning_rate"],
                                           minValue=0))
        self.add_advanced_parameter(number(self.EMA_DECAY, self.tr("Teacher EMA decay"), number.Double,
                                           default["ema_decay"],
                                           minValue=0, maxValue=1))
        self.add_advanced_parameter(number(self.CONSISTENCY, self.tr("Consistency weight"), number.Double,
                                           default["consistency_weight"],
                                           minValue=0))
        self.add_advanced_parameter(number(self.RAMPUP, self.tr("Consistency ramp-up (epochs)"), number.Integer,
                                           default["rampup_epochs"],
                                           minValue=0))
        self.add_advanced_parameter(number(self.VAL_FRACTION, self.tr("Held-out share of labelled patches"),
                                           number.Double, default["val_fraction"], minValue=0.0, maxValue=0.9))
        self.add_advanced_parameter(QgsProcessingParameterBoolean(self.LOOKAHEAD, self.tr("Lookahead"),
                                                                  default["lookahead"]))
        self.add_advanced_parameter(QgsProcessingParameterBoolean(self.AUGMENT, self.tr("Augment"),
                                                                  default["augment"]))
        self.add_advanced_parameter(QgsProcessingParameterFile(self.INIT_WEIGHTS, self.tr(
            "Start from a SatSeg scene model"), extension="satseg", optional=True))
        self.add_device_parameter()
        self.add_model_destination(self.OUTPUT_MODEL, self.tr("Model file"))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_LOG, self.tr("Training log"),
                                                                self.tr("CSV files (*.csv)"), optional=True,
                                                                createByDefault=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Patches with predicted classes"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_ACCURACY, self.tr("Held-out accuracy")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....pipelines.clustering.scene.train import SceneTrainConfig, pretrain_scene

        source = self.parameterAsSource(parameters, self.PATCH_INDEX, context)
        features = index_features(source, self.PATCH_INDEX)
        paths = patch_paths(source, features, self.parameterAsString(parameters, self.PATH_FIELD, context) or "path",
                            self.PATH_FIELD)
        classes = fraction_classes(source)
        if not classes:
            raise QgsProcessingException(f"{self.PATCH_INDEX}: the index has no frac_<class> fields; run 'Label "
                                         "patches from annotations' on it first.")
        labels, labelled = soft_label_matrix(source, features, classes)
        feedback.info(f"{len(paths)} patches, {labelled} labelled; classes {', '.join(classes)}.")
        num, dbl = self.parameterAsInt, self.parameterAsDouble
        config = SceneTrainConfig(
            epochs=num(parameters, self.EPOCHS, context), batch_size=num(parameters, self.BATCH_SIZE, context),
            learning_rate=dbl(parameters, self.LEARNING_RATE, context),
            ema_decay=dbl(parameters, self.EMA_DECAY, context),
            consistency_weight=dbl(parameters, self.CONSISTENCY, context),
            rampup_epochs=num(parameters, self.RAMPUP, context),
            val_fraction=dbl(parameters, self.VAL_FRACTION, context),
            lookahead=self.parameterAsBoolean(parameters, self.LOOKAHEAD, context),
            augment=self.parameterAsBoolean(parameters, self.AUGMENT, context),
            seed=num(parameters, self.SEED, context),
            init_weights=self.parameterAsFile(parameters, self.INIT_WEIGHTS, context) or None)
        model_path = self.model_destination(parameters, self.OUTPUT_MODEL, context, feedback, "scene_model")
        log_path = self.parameterAsFileOutput(parameters, self.OUTPUT_LOG, context) or None
        result = pretrain_scene(paths, labels, classes, model_path, config, self.device_spec(parameters, context),
                                feedback, log_path)
        fields = QgsFields(source.fields())
        fields.append(qgs_field("pred_class", "str"))
        for name in classes:
            fields.append(qgs_field(f"prob_{name}", "float"))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, source.wkbType(),
                                             source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for feature, probs in zip(features, result.probabilities):
            out = QgsFeature(fields)
            out.setGeometry(feature.geometry())
            out.setAttributes(list(feature.attributes()) + [classes[int(probs.argmax())]] +
                              [round(float(p), 6) for p in probs])
            sink.addFeature(out, QgsFeatureSink.FastInsert)
        del sink
        apply_annotation_style_on_load(context, dest_id, "pred_class", classes, self.tr("Predicted scene classes"))
        return {self.OUTPUT_MODEL: model_path, self.OUTPUT_LOG: log_path, self.OUTPUT: dest_id,
                self.VAL_ACCURACY: result.val_accuracy}
