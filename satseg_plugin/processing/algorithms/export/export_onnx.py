"""``satseg:exportonnx``: a SatSeg segmentation or ClusterNet model as an ONNX model that Deepness runs."""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ....models.onnx_model import MAX_OPSET, MIN_OPSET  # no numpy, torch or onnx import
from ...base import SatSegAlgorithm
from ...feedback import QgisFeedback
from ...layers import raster_path

__all__ = ["ExportOnnxAlgorithm"]


class ExportOnnxAlgorithm(SatSegAlgorithm):
    """Export a model file to ONNX with Deepness's and SatSeg's metadata, checked with onnxruntime."""

    MODEL = "MODEL"
    SAMPLE_RASTER = "SAMPLE_RASTER"
    OPSET = "OPSET"
    OUTPUT = "OUTPUT"
    MAX_DIFFERENCE = "MAX_DIFFERENCE"

    group_id = "export"
    requirements = ("numpy", "rasterio", "torch", "segmentation_models_pytorch", "safetensors", "onnx",
                    "onnxruntime")

    def name(self) -> str:
        return "exportonnx"

    def displayName(self) -> str:
        return self.tr("Export model to ONNX")

    def tags(self):
        return self.tr("onnx,deepness,export,model,onnxruntime,interoperability").split(",")

    def shortHelpString(self) -> str:
        return self.tr(
            "Writes a SatSeg model file as an ONNX model. A segmentation model gives class probabilities (sigmoid "
            "for one class, softmax over background and classes otherwise); a pixel clustering (ClusterNet) "
            "model gives its per-pixel features. Batch size, tile height and width stay free (multiples of the "
            "model's input multiple, 32 px for a U-Net).\n\n"
            "The file carries the metadata the Deepness plugin reads (model type, class names, resolution, tile "
            "size and overlap, threshold, standardization mean and std), so Deepness runs it as it is on 8-bit "
            "imagery, and SatSeg's own (bands, classes, band mean and std, threshold, smallest object), so "
            "Segment raster runs it exactly as the .satseg file.\n\n"
            "Before writing, the ONNX model is run with onnxruntime on sample tiles (drawn from the model's band "
            "statistics, and from the sample raster when one is given) and compared with the SatSeg model; a "
            "difference over 1e-4 writes nothing.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("SatSeg model file (.satseg)"),
                                                     fileFilter=self.tr("SatSeg model (*.satseg)")))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.SAMPLE_RASTER, self.tr("Raster to check the export on (optional)"), optional=True))
        self.add_advanced_parameter(QgsProcessingParameterNumber(
            self.OPSET, self.tr("ONNX opset"), QgsProcessingParameterNumber.Integer, MIN_OPSET, minValue=MIN_OPSET,
            maxValue=MAX_OPSET))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("ONNX model"),
                                                                self.tr("ONNX model (*.onnx)")))
        self.addOutput(QgsProcessingOutputNumber(self.MAX_DIFFERENCE,
                                                 self.tr("Largest difference between ONNX and SatSeg outputs")))

    def run_algorithm(self, parameters: Dict[str, Any], context: QgsProcessingContext,
                      feedback: QgisFeedback) -> Dict[str, Any]:
        from ....models.checkpoint import read_metadata
        from ....models.onnx_export import export_onnx, raster_samples
        from ....models.registry import input_multiple

        model = self.parameterAsFile(parameters, self.MODEL, context)
        samples = None
        if parameters.get(self.SAMPLE_RASTER) not in (None, ""):
            meta = read_metadata(model)
            side = 4 * input_multiple(meta.architecture, meta.encoder, **meta.model_kwargs)
            samples = raster_samples(raster_path(self.raster_layer(parameters, self.SAMPLE_RASTER, context),
                                                 self.SAMPLE_RASTER), meta.bands, side)
        result = export_onnx(model, self.parameterAsFileOutput(parameters, self.OUTPUT, context),
                             self.parameterAsInt(parameters, self.OPSET, context), samples, feedback=feedback)
        return {self.OUTPUT: result.path, self.MAX_DIFFERENCE: result.max_difference}
