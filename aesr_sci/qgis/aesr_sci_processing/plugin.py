"""The QGIS plugin object: registers the aesr-sci Processing provider and removes it on unload."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import AesrSciProvider


class AesrSciPlugin:
    """Adds the provider to the Processing registry (in QGIS Desktop and in ``qgis_process``)."""

    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider: AesrSciProvider | None = None

    def initProcessing(self) -> None:
        if self.provider is None:  # QGIS Desktop calls initGui, qgis_process initProcessing
            self.provider = AesrSciProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
