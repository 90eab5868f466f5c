"""Screenshots of the aesr-sci Processing provider for the GIS guide, taken headless.

Run with QGIS's Python under a virtual display (``make qgis-figures``)::

    xvfb-run -a /usr/bin/python3 docs/figures/qgis_screenshots.py RASTER

It loads the plugin from this checkout (no install needed), opens RASTER as a layer, and writes
``qgis_toolbox.png`` (the Processing toolbox filtered on aesr-sci) and ``qgis_dialog.png`` (the
"Upscale raster with a model" dialog with its advanced parameters open) beside this file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.gui import QgsProcessingToolboxTreeView
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QGroupBox, QMainWindow, QToolButton

HERE = Path(__file__).resolve().parent
PLUGINS = HERE.parents[1] / "aesr_sci" / "qgis"


class _Iface:
    """The little of QGIS Desktop's ``iface`` that the Processing dialog asks for."""

    def __init__(self) -> None:
        self.window = QMainWindow()

    def mainWindow(self) -> QMainWindow:
        return self.window


def main(raster: str) -> None:
    app = QgsApplication([], True)
    app.initQgis()
    sys.path[:0] = [str(PLUGINS), "/usr/share/qgis/python/plugins"]
    import aesr_sci_processing
    import processing.tools.general as general
    from processing.core.Processing import Processing

    Processing.initialize()
    plugin = aesr_sci_processing.classFactory(None)
    plugin.initProcessing()
    layer = QgsRasterLayer(raster, Path(raster).stem)
    if not layer.isValid():
        sys.exit(f"{raster}: QGIS cannot open this raster; give a GeoTIFF")
    QgsProject.instance().addMapLayer(layer)

    toolbox = QgsProcessingToolboxTreeView(None, QgsApplication.processingRegistry())
    toolbox.setHeaderHidden(True)
    toolbox.setFilterString("aesr")
    toolbox.resize(380, 150)
    toolbox.show()
    toolbox.expandAll()
    toolbox.clearSelection()

    general.iface = _Iface()
    parameters = {"INPUT": layer, "MODEL": "runs/sentinel2_x2", "OUTPUT": f"{Path(raster).stem}_x2.tif"}
    dialog = general.createAlgorithmDialog("aesrsci:upscale", parameters)
    dialog.show()
    dialog.resize(760, 720)
    for box in dialog.findChildren(QGroupBox):
        if "Advanced" in box.title():
            for button in box.findChildren(QToolButton):
                button.click()  # unfold the advanced parameters

    def grab() -> None:
        toolbox.grab().save(str(HERE / "qgis_toolbox.png"))
        dialog.grab().save(str(HERE / "qgis_dialog.png"))
        app.quit()
        os._exit(0)  # skip QGIS's teardown, which can crash a headless script on exit

    QTimer.singleShot(1500, grab)
    app.exec_()


if __name__ == "__main__":
    main(sys.argv[1])
