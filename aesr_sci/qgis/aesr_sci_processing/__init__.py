"""The aesr-sci QGIS plugin: a Processing provider that runs the installed ``aesr-sci`` command.

QGIS's own Python imports this folder; it uses only qgis, PyQt, QGIS's processing plugin and the
standard library, never torch or aesr_sci. Install it with ``aesr-sci qgis install``.
"""


def classFactory(iface):  # QGIS's entry point for a plugin
    from .plugin import AesrSciPlugin

    return AesrSciPlugin(iface)
