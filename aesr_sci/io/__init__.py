"""Reading and writing NIfTI volumes and GeoTIFF rasters as :class:`aesr_sci.spatial.Image`.

This subpackage is the only place that imports nibabel or rasterio.
"""
