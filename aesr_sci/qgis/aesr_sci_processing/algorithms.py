"""The Processing algorithms: each one maps its parameters one to one onto an ``aesr-sci`` command.

A parameter named ``PATCH_SIZE`` becomes the option ``--patch-size`` (unless ``OPTIONS`` names
another: ``GUIDE_2`` is a second ``--guide``); ``POSITIONAL`` parameters become the command's
arguments in order. Nothing here imports torch or aesr_sci: the work is done
by the ``aesr-sci`` executable that the provider's setting names (see :mod:`.runner`).
"""

from __future__ import annotations

import html
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from . import runner

_DESTINATIONS = ("rasterDestination", "folderDestination", "fileDestination")


def _advanced(param: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return param


def _number(name: str, text: str, kind, default=None, minimum=None, maximum=None, optional=False):
    param = QgsProcessingParameterNumber(name, text, kind, default, optional)
    if minimum is not None:
        param.setMinimum(minimum)
    if maximum is not None:
        param.setMaximum(maximum)
    return param


class AesrSciAlgorithm(QgsProcessingAlgorithm):
    """Runs ``aesr-sci COMMAND POSITIONAL... --option value...`` with progress and cancellation."""

    COMMAND = ""
    POSITIONAL: tuple[str, ...] = ()
    OPTIONS: tuple[tuple[str, str], ...] = ()  # (parameter, option) where the option is not its name
    FEATURE = ""  # what an aesr-sci without the command or its options lacks, for the error message
    ID = ""
    TITLE = ""
    HELP = ""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("aesr-sci", text)

    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return self.ID

    def displayName(self) -> str:
        return self.tr(self.TITLE)

    def group(self) -> str:
        return self.tr("Super-resolution")

    def groupId(self) -> str:
        return "superresolution"

    def shortHelpString(self) -> str:
        return self.tr(self.HELP)

    # ---------------------------------------------------------------- parameters -> arguments
    def raster_path(self, parameters, name: str, context) -> str:
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(f"{name}: no raster layer given")
        path = layer.source().split("|")[0]
        if not Path(path).is_file():
            raise QgsProcessingException(
                f"{name}: {layer.name()} is not a raster file on disk: save it as a GeoTIFF "
                "(Export > Save As...) and run again"
            )
        return path

    def value(self, parameters, name: str, context) -> str | None:
        """The parameter as the command line's text, or None when it is not set."""
        definition = self.parameterDefinition(name)
        kind = definition.type()
        if kind not in _DESTINATIONS and parameters.get(name, definition.defaultValue()) in (None, ""):
            return None
        if kind == "raster":
            return self.raster_path(parameters, name, context)
        if kind == "rasterDestination":
            return self.parameterAsOutputLayer(parameters, name, context)
        if kind in ("folderDestination", "fileDestination"):
            return self.parameterAsFileOutput(parameters, name, context) or None
        if kind == "number":
            if definition.dataType() == QgsProcessingParameterNumber.Integer:
                return str(self.parameterAsInt(parameters, name, context))
            return repr(self.parameterAsDouble(parameters, name, context))
        if kind == "enum":
            return definition.options()[self.parameterAsEnum(parameters, name, context)]
        if kind == "boolean":
            return "true" if self.parameterAsBoolean(parameters, name, context) else None
        return self.parameterAsString(parameters, name, context).strip() or None

    def values(self, parameters, context) -> dict[str, str]:
        """Every parameter that is set, as text (computed once: a temporary output's name is random)."""
        found = {}
        for definition in self.parameterDefinitions():
            value = self.value(parameters, definition.name(), context)
            if value is not None:
                found[definition.name()] = value
            elif definition.name() in self.POSITIONAL:
                raise QgsProcessingException(f"{definition.name()}: a value is required")
        return found

    def arguments(self, values: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
        """The command's arguments, the options among them and the files or folders it writes."""
        options, option_args, outputs = [], [], []
        for name, value in values.items():
            kind = self.parameterDefinition(name).type()
            if kind == "fileDestination":
                continue  # written by the algorithm, not by the command
            if kind in _DESTINATIONS:
                outputs.append(value)
            if name in self.POSITIONAL:
                continue
            option = dict(self.OPTIONS).get(name) or "--" + name.lower().replace("_", "-")
            options.append(option)
            option_args += [option] if kind == "boolean" else [option, value]
        if any(Path(p).exists() for p in outputs):
            options.append("--overwrite")  # QGIS asked the user before choosing an existing file
            option_args.append("--overwrite")
        positional = [values[name] for name in self.POSITIONAL]
        return [self.COMMAND, *positional, *option_args], options, outputs

    # --------------------------------------------------------------------------------- run
    def run_command(self, values: dict[str, str], feedback) -> str:
        """Run the command for these parameter values; its errors become QgsProcessingException."""
        from .provider import executable

        args, options, outputs = self.arguments(values)
        feedback = feedback if feedback is not None else QgsProcessingFeedback()
        try:
            exe = runner.check_executable(executable())
            runner.require(exe, self.COMMAND, tuple(options), self.FEATURE)
            return runner.run(exe, args, feedback, outputs=tuple(outputs))
        except runner.CommandError as exc:
            raise QgsProcessingException(str(exc)) from None

    def processAlgorithm(self, parameters, context, feedback):
        values = self.values(parameters, context)
        self.run_command(values, feedback)
        return {
            d.name(): values[d.name()] for d in self.destinationParameterDefinitions() if d.name() in values
        }


def _add_upscale_options(alg: AesrSciAlgorithm) -> None:
    """Parameters shared by the two upscale algorithms; each is an option of ``aesr-sci upscale``."""
    alg.addParameter(
        QgsProcessingParameterBoolean("TTA", alg.tr("Average over flips and rotations (TTA)"), False)
    )
    alg.addParameter(
        QgsProcessingParameterBoolean(
            "CONSISTENCY", alg.tr("Consistency: degrading the output gives back the input"), False
        )
    )
    alg.addParameter(QgsProcessingParameterBoolean("COG", alg.tr("Write a Cloud-Optimized GeoTIFF"), False))
    _add_advanced_upscale_options(alg)


def _add_advanced_upscale_options(alg: AesrSciAlgorithm) -> None:
    """The advanced parameters of the two upscale algorithms: windows, precision, memory, device and
    fine-tuning (``--patch-size`` ... ``--adapt``)."""
    integer = QgsProcessingParameterNumber.Integer
    alg.addParameter(
        _advanced(
            _number(
                "PATCH_SIZE",
                alg.tr("Window core in input pixels (empty: sized by the memory budget; 0: whole raster)"),
                integer,
                minimum=0,
                optional=True,
            )
        )
    )
    alg.addParameter(
        _advanced(
            QgsProcessingParameterEnum(
                "PRECISION",
                alg.tr("Precision (auto: bfloat16 where the hardware has it)"),
                ["auto", "float32", "bfloat16", "float16"],
                defaultValue=0,
            )
        )
    )
    alg.addParameter(
        _advanced(
            QgsProcessingParameterString(
                "MEMORY_BUDGET", alg.tr("Memory budget for the windows (e.g. 2G)"), optional=True
            )
        )
    )
    alg.addParameter(
        _advanced(_number("BLOCK", alg.tr("Streaming block size in input pixels"), integer, 1024, 16))
    )
    alg.addParameter(
        _advanced(QgsProcessingParameterString("DEVICE", alg.tr("Device (cpu, cuda, cuda:N)"), optional=True))
    )
    alg.addParameter(
        _advanced(
            _number(
                "ADAPT",
                alg.tr("Fine-tune the model on this raster first, for minutes (empty: no fine-tuning)"),
                QgsProcessingParameterNumber.Double,
                minimum=0.01,
                optional=True,
            )
        )
    )


def _model_parameter(alg: AesrSciAlgorithm) -> QgsProcessingParameterFile:
    return QgsProcessingParameterFile(
        "MODEL",
        alg.tr("Model (a training run folder or its model folder)"),
        QgsProcessingParameterFile.Folder,
    )


class UpscaleAlgorithm(AesrSciAlgorithm):
    COMMAND = "upscale"
    POSITIONAL = ("MODEL", "INPUT", "OUTPUT")
    ID = "upscale"
    TITLE = "Upscale raster with a model"
    HELP = (
        "Super-resolves a raster with a trained aesr-sci model (aesr-sci upscale). The output has the "
        "input's CRS and bounds, pixels smaller by the model's scale, the input's data type, band "
        "names and nodata. Advanced: the window's size in input pixels (not set: the largest that fits "
        "the memory budget; 0: the whole raster at once), precision, memory budget, streaming block, "
        "the device (not set: CUDA when available), and minutes of fine-tuning a copy of the model on "
        "this raster first (--adapt)."
    )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        self.addParameter(_model_parameter(self))
        _add_upscale_options(self)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Upscaled")))


class GuidedUpscaleAlgorithm(AesrSciAlgorithm):
    COMMAND = "upscale"
    POSITIONAL = ("MODEL", "INPUT", "OUTPUT")
    OPTIONS = (("GUIDE_2", "--guide"),)
    FEATURE = "guides"
    ID = "upscaleguided"
    TITLE = "Upscale with a guide"
    HELP = (
        "Super-resolves a raster with a guided model and a co-registered guide raster on the output "
        "grid (for example Sentinel-2 20 m bands guided by its 10 m bands): aesr-sci upscale --guide. "
        "The output lands on the guide's grid (its transform, CRS and size), with the input's band "
        "names, data type and nodata. A model with two guide files (the Sentinel-2 x6 model: 10 m "
        "and 20 m bands) takes the coarser one as the second guide. Advanced: fine-tune a copy of the "
        "model on this raster and its guide for some minutes first (Wald's protocol, --adapt)."
    )

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterRasterLayer("GUIDE", self.tr("Guide raster (on the output grid)"))
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "GUIDE_2", self.tr("Second, coarser guide raster (x6 models: the 20 m bands)"), optional=True
            )
        )
        self.addParameter(_model_parameter(self))
        _add_upscale_options(self)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Upscaled")))


class SelfsrAlgorithm(AesrSciAlgorithm):
    COMMAND = "selfsr"
    POSITIONAL = ("INPUT", "OUTPUT")
    OPTIONS = (("GUIDE_2", "--guide"),)
    FEATURE = "self-supervised super-resolution"
    ID = "selfsr"
    TITLE = "Self-supervised super-resolution (selfsr)"
    HELP = (
        "Trains a network on pairs made from the input raster alone (and its guide, if given) within "
        "the time budget, then super-resolves it: aesr-sci selfsr. No trained model is needed. With a "
        "guide (a co-registered raster on the output grid, e.g. Sentinel-2's 10 m bands for its 20 m "
        "bands) a guided network learns by Wald's protocol on the input scene (aesr-sci selfsr "
        "--guide); the scale is the input's pixel size over the guide's and the output lands on the "
        "guide's grid. A second, coarser guide (e.g. the 20 m bands for the 60 m bands) is optional."
    )

    def initAlgorithm(self, config=None):
        double = QgsProcessingParameterNumber.Double
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        self.addParameter(
            QgsProcessingParameterString("SCALE", self.tr("Scale factor, e.g. 2"), optional=True)
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "GUIDE", self.tr("Guide raster on the output grid (optional)"), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                "GUIDE_2", self.tr("Second, coarser guide raster (optional)"), optional=True
            )
        )
        self.addParameter(
            _number("MINUTES", self.tr("Training budget in minutes"), double, None, 0.1, None, True)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "TTA", self.tr("Average over flips and rotations (TTA; not for thick-slice MRI)"), False
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                "CONSISTENCY", self.tr("Consistency: degrading the output gives back the input"), False
            )
        )
        self.addParameter(
            _advanced(
                QgsProcessingParameterString(
                    "DEVICE",
                    self.tr("Device (cpu, cuda, cuda:N)"),
                    optional=True,
                )
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Upscaled")))
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                "SAVE_MODEL", self.tr("Save the trained model to"), optional=True, createByDefault=False
            )
        )


class ModelsAlgorithm(AesrSciAlgorithm):
    COMMAND = "models"
    ID = "models"
    TITLE = "List models"
    HELP = (
        "Lists the networks aesr-sci can train, with their parameters and compute per output pixel, "
        "for one configuration (aesr-sci models)."
    )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterEnum(
                "SPATIAL_DIMS", self.tr("Spatial dimensions"), ["2", "3"], defaultValue=0
            )
        )
        self.addParameter(
            _number("CHANNELS", self.tr("Input and output bands"), QgsProcessingParameterNumber.Integer, 1, 1)
        )
        self.addParameter(QgsProcessingParameterString("SCALE", self.tr("Scale factor"), "2"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                "OUTPUT", self.tr("Models table"), self.tr("HTML files (*.html)")
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        values = self.values(parameters, context)
        table = self.run_command(values, feedback)
        feedback.pushInfo(table)
        output = values["OUTPUT"]
        Path(output).write_text(
            f"<html><head><meta charset='utf-8'/></head><body><pre>{html.escape(table)}</pre></body></html>\n",
            encoding="utf-8",
        )
        return {"OUTPUT": output}


ALGORITHMS = (UpscaleAlgorithm, GuidedUpscaleAlgorithm, SelfsrAlgorithm, ModelsAlgorithm)
