# Two entry points for a fresh clone (see README.md): `make demo` and `make test`.
# Both create .venv/ and install torch==2.13.0 (CPU build) before anything that depends on torch,
# so pip never resolves a newer torch with several GB of CUDA packages.
export NO_MKDOCS_2_WARNING := 1
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# The demo's training budget in minutes (the recipe's own budget is larger; see docs/recipes.md).
MINUTES ?= 10

.PHONY: demo test install install-test lint docs qgis-figures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip

install: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[sample]"

install-test: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"

demo: install
	$(BIN)/aesr-sci train recipes/mri_x2.yaml --out runs/mri_x2 --overwrite --set train.max_minutes=$(MINUTES)
	$(BIN)/aesr-sci degrade $$($(BIN)/aesr-sci sample --split val) runs/mri_x2/val_lowres.nii.gz --scale 2 --method kspace --overwrite
	$(BIN)/aesr-sci upscale runs/mri_x2 runs/mri_x2/val_lowres.nii.gz runs/mri_x2/val_upscaled.nii.gz --overwrite
	$(BIN)/aesr-sci evaluate runs/mri_x2 $$($(BIN)/aesr-sci sample --split val) --figures runs/mri_x2/figures --json runs/mri_x2/evaluation.json --overwrite

test: install-test lint
	$(BIN)/pytest -q
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site
	$(BIN)/cffconvert --validate

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: install-test
	$(BIN)/mkdocs serve

# The QGIS screenshots in docs/figures (needs Debian's qgis, python3-qgis and xvfb; any GeoTIFF will do).
AESR_SCI_DATA ?= ../shared/data
QGIS_RASTER ?= $(AESR_SCI_DATA)/sat/small/rasterio_RGB.byte.tif
qgis-figures:
	xvfb-run -a /usr/bin/python3 docs/figures/qgis_screenshots.py $(QGIS_RASTER)

clean:
	rm -rf $(VENV) runs site .pytest_cache .ruff_cache
