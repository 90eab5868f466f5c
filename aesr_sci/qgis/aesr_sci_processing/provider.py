"""The aesr-sci Processing provider: its algorithms and the setting that names the executable."""

from __future__ import annotations

from processing.core.ProcessingConfig import ProcessingConfig, Setting
from qgis.core import QgsApplication, QgsProcessingProvider

from . import runner
from .algorithms import ALGORITHMS

EXECUTABLE_SETTING = "AESR_SCI_EXECUTABLE"
PROVIDER_NAME = "aesr-sci"


def executable() -> str:
    """The provider setting when set, else what ``aesr-sci qgis install`` recorded, else PATH's."""
    return str(ProcessingConfig.getSetting(EXECUTABLE_SETTING) or "").strip() or runner.recorded_executable()


class AesrSciProvider(QgsProcessingProvider):
    """Super-resolution algorithms that run the installed ``aesr-sci`` command."""

    def load(self) -> bool:
        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                EXECUTABLE_SETTING,
                self.tr("aesr-sci executable"),
                runner.recorded_executable(),
                valuetype=Setting.FILE,
            )
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        ProcessingConfig.removeSetting(EXECUTABLE_SETTING)

    def id(self) -> str:
        return "aesrsci"

    def name(self) -> str:
        return PROVIDER_NAME

    def longName(self) -> str:
        return "aesr-sci (learned super-resolution)"

    def icon(self):
        return QgsApplication.getThemeIcon("/processingAlgorithm.svg")

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:
        return "tif"
