"""The ``aesr-sci`` command line: thin commands over the Python API.

Heavy libraries (torch, nibabel, rasterio) are imported inside each command so that
``aesr-sci --help`` and ``aesr-sci --version`` answer at once. Results go to stdout, messages to
stderr. A user's mistake (any :class:`aesr_sci.errors.AesrError`) prints one line and exits with
status 2, with no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
from .errors import AesrError, ParameterError
from .spatial import METHODS, per_axis

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2
#: bounds that keep a mistyped option from running for minutes or filling the memory
MAX_SIGMA = 64.0
MAX_CHANNELS = 1024


def _user_errors(func: F) -> F:
    """Turn AesrError (and a few builtin user mistakes) into one line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AesrError as exc:
            msg = str(exc).strip() or type(exc).__name__
            click.echo(f"Error: {msg}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class _Once(logging.Filter):
    """Let each distinct message through once (GDAL repeats its warnings per block, a per-band
    operation its notes per band)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def _show_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kwargs: Any) -> None:
    """Python warnings as one log line, without the source file and line they came from."""
    logging.getLogger("aesr_sci").warning("Warning: %s", " ".join(str(message).split()))


def _setup_logging(verbose: int, quiet: bool) -> None:
    import warnings

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _Once) for f in handler.filters):
            handler.addFilter(_Once())
    warnings.showwarning = _show_warning
    # rasterio logs each GDAL error at INFO before raising it; the error's one line says it already
    logging.getLogger("rasterio._env").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")


def _check_device(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--device``: auto, cpu, mps, cuda or cuda:N (availability is checked when it is used)."""
    if value is not None and not _DEVICE.fullmatch(value.strip().lower()):
        raise click.BadParameter(f"{value!r} is not a device: use cpu, cuda or cuda:N (e.g. cuda:0)")
    return None if value is None else value.strip().lower()


class _BadValue(click.BadParameter):
    """A bad option value, shown as one line (``Error: --scale must be ...``) with exit status 2."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.message}", err=True)


def _parse_scale(_ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``2`` -> 2, ``1,1,4`` -> (1, 1, 4): :func:`aesr_sci.spatial.per_axis`, checked per file later."""
    if value is None:
        return None
    try:
        parts = per_axis(value, name=f"--{(param.name or 'scale').replace('_', '-')}")
    except ParameterError as exc:
        raise _BadValue(str(exc), param=param) from None
    return parts[0] if len(parts) == 1 else parts


def _raster_options(func: F) -> F:
    """``--bands`` and ``--nodata``: which bands of a raster to read, and fill it does not flag."""
    func = click.option(
        "--nodata",
        type=float,
        default=None,
        help="Rasters: a fill value the file does not flag (e.g. Landsat's 0); outputs flag it.",
    )(func)
    return click.option(
        "--bands",
        default=None,
        metavar="LIST",
        help="Rasters: bands to use, in order, by 1-based number or description (5,6,7 or B5,B6,B7).",
    )(func)


def _dtype_option(func: F) -> F:
    """``--dtype``: the outputs' data type."""
    return click.option(
        "--dtype", default=None, help="Output data type, e.g. float32 (default: the input's)."
    )(func)


def _parse_bytes(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``2G``, ``500M``, ``64K`` or a number of bytes."""
    if value is None:
        return None
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    try:
        number = float(text[:-1] if text[-1:] in units else text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size: write e.g. 2G or 500M") from None
    if number <= 0:
        raise click.BadParameter(f"{value!r} must be positive: write e.g. 2G or 500M")
    return int(number * factor)


_PRECISIONS = ["auto", "float32", "bfloat16", "float16"]  # infer.PRECISIONS, without importing torch
_precision_option = click.option(
    "--precision",
    type=click.Choice(_PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: bfloat16 on CUDA and on CPUs with native bfloat16, else float32.",
)
_device_option = click.option(
    "--device",
    default=None,
    callback=_check_device,
    help="cpu, cuda or cuda:N (default: CUDA when available).",
)


def _adapt_option(help: str) -> Callable[[F], F]:
    """``--adapt MINUTES``: fine-tune a copy of the model on the input first (``help`` says on what)."""
    return click.option(
        "--adapt", type=click.FloatRange(0, min_open=True), default=None, metavar="MINUTES", help=help
    )


_tta_option = click.option("--tta", is_flag=True, help="Average over flips and in-plane rotations.")
_consistency_option = click.option(
    "--consistency", is_flag=True, help="Project the output so that degrading it reproduces the input."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="aesr-sci")
@click.option("-v", "--verbose", count=True, help="More log messages (repeat for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Learned super-resolution for NIfTI volumes and GeoTIFF rasters.

    Spatial metadata (affine, CRS, transform, nodata, band names, dtype) is kept exactly from
    input to output. Run 'aesr-sci COMMAND --help' for the options of each command.
    """
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    _setup_logging(verbose, quiet)


# --------------------------------------------------------------------------------------- info
@main.command(short_help="Print shape, dtype, grid and CRS of a NIfTI or GeoTIFF.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
@_user_errors
def info(path: str, as_json: bool) -> None:
    """Print what 'gdalinfo' or 'nib-ls' would tell about PATH.

    Shape, dtype, voxel or pixel size, orientation or CRS, bounds, nodata and band names, for
    NIfTI (.nii, .nii.gz) and GeoTIFF (.tif, .tiff) alike.

    \b
    Example:
      aesr-sci info scan.nii.gz
      aesr-sci info tile.tif --json
    """
    from .io import format_info
    from .io import info as info_api

    result = info_api(path)
    click.echo(json.dumps(result, indent=2) if as_json else format_info(result))


# ------------------------------------------------------------------------------------ degrade
@main.command(short_help="Make a realistic low-resolution twin of an image.")
@click.argument("input", type=click.Path(dir_okay=False, path_type=str))
@click.argument("output", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--scale", required=True, callback=_parse_scale, help="Factor, e.g. 2, or per axis, e.g. 1,1,4."
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default="gaussian",
    show_default=True,
    help="Degradation model (see the docs' degradation section).",
)
@click.option(
    "--sigma",
    type=click.FloatRange(0, MAX_SIGMA, min_open=True),
    default=None,
    help=f"gaussian: blur sigma in high-resolution pixels (at most {MAX_SIGMA:g}).",
)
@click.option(
    "--gap", type=float, default=0.0, show_default=True, help="slice: gap between slices, in slices."
)
@click.option(
    "--noise", type=float, default=0.0, show_default=True, help="Noise level as a fraction of the data range."
)
@click.option("--seed", type=int, default=None, help="Random seed for the noise.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@_raster_options
@_dtype_option
@_user_errors
def degrade(
    input: str,
    output: str,
    scale: Any,
    method: str,
    sigma: float | None,
    gap: float,
    noise: float,
    seed: int | None,
    overwrite: bool,
    bands: str | None,
    nodata: float | None,
    dtype: str | None,
) -> None:
    """Degrade INPUT by SCALE and write the low-resolution OUTPUT with its correct geometry.

    'kspace' keeps the centre of k-space (MRI; the first voxel centre stays put); 'slice' applies
    a Gaussian slice profile along the scaled axis then decimates (thick-slice MRI); 'gaussian'
    blurs each band to a sensor-like MTF and takes block means (satellite); 'area' and 'bicubic'
    are simple references. The method is recorded in the output's provenance.

    \b
    Example:
      aesr-sci degrade t1.nii.gz t1_x2.nii.gz --scale 2 --method kspace
      aesr-sci degrade s2.tif s2_x4.tif --scale 4 --method gaussian
    """
    from .data.degrade import degrade as degrade_api
    from .fileutil import check_output
    from .io import parse_dtype, read, write
    from .io.bids import sidecar_path, write_output_sidecar

    check_output(output, overwrite=overwrite, inputs=[input])
    if sidecar_path(output) is not None:
        check_output(sidecar_path(output), overwrite=overwrite, inputs=[input])
    dtype = parse_dtype(dtype)
    params: dict[str, Any] = {}
    if sigma is not None:
        params["sigma"] = sigma
    if method == "slice":
        params["gap"] = gap
    image = read(input, bands=bands, nodata=nodata)
    scale = per_axis(scale, image.spatial_dims, name=f"{input}: --scale")
    lq = degrade_api(image, scale=scale, method=method, noise=noise, seed=seed, **params)
    write(lq, output, overwrite=overwrite, dtype=dtype)
    write_output_sidecar(output, lq.meta.provenance, source=input, overwrite=overwrite)
    click.echo(
        f"wrote {output}: {'x'.join(map(str, lq.spatial_shape))} ({method}, scale {'x'.join(map(str, scale))})",
        err=True,
    )


# -------------------------------------------------------------------------------------- train
@main.command(short_help="Train a model from a YAML recipe.")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key; VALUE is parsed as YAML (repeatable).",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default=None, help="Run directory."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out from its last checkpoint.")
@_device_option
@click.option(
    "--precision",
    type=click.Choice(_PRECISIONS),
    default=None,
    help="Training precision (sets train.precision; auto: bfloat16 on CUDA and on CPUs with native bfloat16).",
)
@click.option("--check", is_flag=True, help="Validate the recipe and the data, then stop.")
@click.option("--overwrite", is_flag=True, help="Reuse a non-empty --out directory, replacing its contents.")
@click.pass_context
@_user_errors
def train(
    ctx: click.Context,
    recipe: str,
    overrides: tuple[str, ...],
    out_dir: str | None,
    resume: bool,
    device: str | None,
    precision: str | None,
    check: bool,
    overwrite: bool,
) -> None:
    """Train the network described by RECIPE and write the model to the run directory.

    The recipe is validated first (unknown keys, wrong types, patch sizes that the scale does not
    divide): one line per problem. Training runs on CUDA when available, otherwise on all CPU
    cores, in bfloat16 where the hardware has it (train.precision), stops cleanly at train.max_minutes, and keeps the best model (the last one for a GAN; see train.keep).

    \b
    Example:
      aesr-sci train recipes/mri_x2.yaml
      aesr-sci train recipes/sentinel2_x2.yaml --set 'data.paths=[s2/*.tif]' --set train.max_minutes=10
    """
    from .recipe import load_recipe
    from .train import check_data
    from .train import train as train_api

    if precision is not None:
        overrides = (*overrides, f"train.precision={precision}")
    cfg = load_recipe(recipe, overrides=list(overrides))
    if check:
        summary = check_data(cfg)
        click.echo(f"{recipe}: recipe is valid; {summary}")
        return
    result = train_api(
        cfg,
        out_dir=out_dir,
        resume=resume,
        device=device,
        overwrite=overwrite,
        progress=not ctx.obj["quiet"],
    )
    click.echo(result.summary())


# ------------------------------------------------------------------------------------ upscale
@main.command(short_help="Super-resolve NIfTI or GeoTIFF files with a trained model.")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@_adapt_option(
    "Fine-tune a copy of MODEL on the input (degraded one scale further; with --guide, the input "
    "and its guide by Wald's protocol) for MINUTES first; one INPUT."
)
@click.option(
    "--patch-size",
    callback=_parse_scale,
    default=None,
    help="Window core in input voxels (default: the largest that fits --memory-budget; 0: whole image).",
)
@_precision_option
@click.option(
    "--memory-budget",
    callback=_parse_bytes,
    default=None,
    help="Memory the windows may use, e.g. 2G or 500M (default: half the available memory).",
)
@click.option(
    "--block",
    type=click.IntRange(16),
    default=1024,
    show_default=True,
    help="GeoTIFF: stream block size in input pixels (sets peak memory).",
)
@_device_option
@_tta_option
@_consistency_option
@click.option("--cog", is_flag=True, help="GeoTIFF: write a Cloud-Optimized GeoTIFF with overviews.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that exist.")
@click.option("--skip-existing", is_flag=True, help="Leave outputs that exist as they are (resume a batch).")
@_raster_options
@_dtype_option
@click.option(
    "--bids",
    is_flag=True,
    help="INPUT is a BIDS dataset folder and OUTPUT its derivative folder (e.g. bids/derivatives/aesr-sci).",
)
@click.option(
    "--guide",
    "guides",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Guided models: the guide on the output grid (repeat for several files, finest first).",
)
@click.pass_context
@_user_errors
def upscale(
    ctx: click.Context,
    model: str,
    paths: tuple[str, ...],
    adapt: float | None,
    patch_size: Any,
    precision: str,
    memory_budget: int | None,
    block: int,
    device: str | None,
    tta: bool,
    consistency: bool,
    cog: bool,
    overwrite: bool,
    skip_existing: bool,
    bands: str | None,
    nodata: float | None,
    dtype: str | None,
    bids: bool,
    guides: tuple[str, ...],
) -> None:
    """Upscale INPUT... into OUTPUT with MODEL (a training run directory or a model.json file).

    The last path is the output: a file for one input, a directory for several inputs or an input
    directory. Outputs keep their metadata (affine or transform, CRS, band names, nodata, dtype)
    with the grid moved exactly as the model's degradation defines. Every input and output name is
    checked before the first file is processed; --skip-existing resumes an interrupted batch.
    A NIfTI output gets a JSON sidecar (out.json) with its provenance; with --bids, the BIDS
    dataset INPUT upscales into BIDS-derivative names under OUTPUT
    (sub-01/anat/sub-01_desc-superres_T1w.nii.gz).

    \b
    Example:
      aesr-sci upscale runs/mri_x2 t1_2mm.nii.gz t1_1mm.nii.gz
      aesr-sci upscale runs/s2_x2 tiles/ tiles_x2/ --tta
      aesr-sci upscale runs/l8_x2 LC08_stack.tif out.tif --bands 2,3,4,5,6,7 --nodata 0 --dtype float32
      aesr-sci upscale runs/mri_x2 bids/ bids/derivatives/aesr-sci --bids
      aesr-sci upscale runs/sentinel2_guided_x2 S2_20m.tif S2_20m_at_10m.tif --guide S2_10m.tif

    A guided model's output lands exactly on the guide's grid (its transform, CRS and size).
    """
    from .infer import upscale_files

    _check_upscale_paths(paths, guides=guides, overwrite=overwrite, skip_existing=skip_existing)
    if adapt is not None:
        model = _adapted(ctx, model, paths, adapt, guides, overwrite, device=device, precision=precision)
    written = upscale_files(
        model,
        list(paths[:-1]),
        paths[-1],
        patch_size=patch_size,
        precision=precision,
        memory_budget=memory_budget,
        block=block,
        device=device,
        tta=tta,
        consistency=consistency,
        cog=cog,
        overwrite=overwrite,
        skip_existing=skip_existing,
        progress=not ctx.obj["quiet"],
        bands=bands,
        nodata=nodata,
        dtype=dtype,
        bids=bids,
        guide=guides,
    )
    for path in written:
        click.echo(str(path))


def _check_upscale_paths(
    paths: tuple[str, ...], *, guides: tuple[str, ...], overwrite: bool, skip_existing: bool
) -> None:
    """``upscale``'s checks of its paths and flags together, before any file is read."""
    if len(paths) < 2:
        raise click.UsageError("give at least one INPUT and an OUTPUT")
    if guides and (len(paths) > 2 or os.path.isdir(paths[0])):
        raise click.UsageError("--guide goes with one INPUT file: upscale each file with its own guide")
    if overwrite and skip_existing:
        raise click.UsageError("--overwrite and --skip-existing exclude each other: give one")


# ---------------------------------------------------------------------------------- sentinel2
@main.command(short_help="One 10 m GeoTIFF of every band of a Sentinel-2 product (guided models).")
@click.argument("model_x2", type=click.Path(path_type=str))
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--model-x6", default=None, type=click.Path(path_type=str), help="Guided x6 model for the 60 m bands."
)
@_device_option
@_precision_option
@click.option(
    "--memory-budget", callback=_parse_bytes, default=None, help="Memory the windows may use, e.g. 2G."
)
@_adapt_option("Fine-tune a copy of each model on the product itself (Wald's protocol) for MINUTES first.")
@_tta_option
@_consistency_option
@click.option("--cog", is_flag=True, help="Write a Cloud-Optimized GeoTIFF with overviews.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.pass_context
@_user_errors
def sentinel2(
    ctx: click.Context,
    model_x2: str,
    paths: tuple[str, ...],
    model_x6: str | None,
    device: str | None,
    precision: str,
    memory_budget: int | None,
    adapt: float | None,
    tta: bool,
    consistency: bool,
    cog: bool,
    overwrite: bool,
) -> None:
    """Stack a Sentinel-2 product's 10 m, 20 m (and 60 m) files B10M B20M [B60M] into OUTPUT at 10 m.

    All bands in wavelength order (descriptions B1, B2, ... B12) on the 10 m grid: the 10 m bands
    copied as they are, the 20 m bands sharpened by MODEL_X2 (a guided x2 model, guided by the 10 m
    bands), the 60 m bands by --model-x6 (guided by the 10 and 20 m bands). A 60 m file needs
    --model-x6; leave it out to stack the 10 and 20 m bands only. The sharpest stack (measured
    under Wald's protocol in docs/benchmarks.md) comes with --adapt 10 --tta --consistency.

    \b
    Example:
      aesr-sci sentinel2 runs/sentinel2_guided_x2 T18SVG_10m.tif T18SVG_20m.tif T18SVG_all_10m.tif --cog
      aesr-sci sentinel2 runs/sentinel2_guided_x2 --model-x6 runs/sentinel2_guided_x6 \\
          T18SVG_10m.tif T18SVG_20m.tif T18SVG_60m.tif T18SVG_all_10m.tif
    """
    from .product import sentinel2_stack

    if len(paths) < 3:
        raise click.UsageError("give the product's 10 m and 20 m files (and its 60 m file) and an OUTPUT")
    out = sentinel2_stack(
        model_x2,
        list(paths[:-1]),
        paths[-1],
        model_x6=model_x6,
        cog=cog,
        overwrite=overwrite,
        device=device,
        precision=precision,
        memory_budget=memory_budget,
        adapt=adapt,
        tta=tta,
        consistency=consistency,
        progress=not ctx.obj["quiet"],
    )
    click.echo(str(out))


# ----------------------------------------------------------------------------------- evaluate
@main.command(short_help="Compare a model with interpolation baselines on high-resolution files.")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Write results as JSON.",
)
@click.option(
    "--figures", type=click.Path(file_okay=False, path_type=str), default=None, help="Write PNG panels here."
)
@click.option("--device", default=None, callback=_check_device, help="cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace the JSON file or figures if they exist.")
@_raster_options
@click.option(
    "--guide",
    "guides",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Guided models: each file's guide, in the files' order (x6: its 10 m and 20 m files in turn).",
)
@click.pass_context
@_user_errors
def evaluate(
    ctx: click.Context,
    model: str,
    paths: tuple[str, ...],
    json_path: str | None,
    figures: str | None,
    device: str | None,
    overwrite: bool,
    bands: str | None,
    nodata: float | None,
    guides: tuple[str, ...],
) -> None:
    """Degrade each high-resolution file HR with the model's own degradation, upscale it, compare.

    Prints masked PSNR and SSIM of the model and of nearest, linear, cubic (and, for k-space
    models, zero-filled Fourier) interpolation, one row per file and a mean row.

    For a guided model, give each file's guide with --guide (Wald's protocol: target and guide are
    both degraded by the scale); the table then has a row for the model, bicubic and the hpf and
    brovey pansharpening, with PSNR, SSIM, RMSE, SAM and PSNR per band.

    \b
    Example:
      aesr-sci evaluate runs/mri_x2 held_out/*.nii.gz --json scores.json --figures figs/
      aesr-sci evaluate runs/sentinel2_guided_x2 T49JGM_20m.tif --guide T49JGM_10m.tif
    """
    from .checkpoint import model_files
    from .evaluation import evaluate as evaluate_api
    from .evaluation import format_table
    from .fileutil import check_output

    if json_path is not None:  # never onto an input, whatever --overwrite says
        check_output(json_path, overwrite=True, inputs=[*paths, *guides, *model_files(model)])
    report = evaluate_api(
        model,
        list(paths),
        json_path=json_path,
        figures=figures,
        device=device,
        overwrite=overwrite,
        progress=not ctx.obj["quiet"],
        bands=bands,
        nodata=nodata,
        guides=list(guides) or None,
    )
    click.echo(format_table(report))


# ------------------------------------------------------------------------------------- models
@main.command(short_help="List the networks with parameters and compute per output voxel.")
@click.option("--spatial-dims", type=click.Choice(["2", "3"]), default="3", show_default=True)
@click.option(
    "--channels",
    type=click.IntRange(1, MAX_CHANNELS),
    default=1,
    show_default=True,
    help=f"Input and output channels (at most {MAX_CHANNELS}).",
)
@click.option("--scale", callback=_parse_scale, default="2", show_default=True, help="Scale factor.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_user_errors
def models(spatial_dims: str, channels: int, scale: Any, as_json: bool) -> None:
    """List the registered networks for one configuration.

    \b
    Example:
      aesr-sci models --spatial-dims 2 --channels 6 --scale 4
    """
    from .nets import describe_models

    rows = describe_models(spatial_dims=int(spatial_dims), in_channels=channels, scale=scale)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<12} {'parameters':>12} {'MAC/out voxel':>14}  description")
    for r in rows:
        click.echo(
            f"{r['name']:<12} {r['parameters']:>12,} {r['macs_per_output_voxel']:>14,.0f}  {r['description']}"
        )


# ------------------------------------------------------------------------------------- selfsr
def _adapted(
    ctx: click.Context,
    model: str,
    paths: tuple[str, ...],
    minutes: float,
    guides: tuple[str, ...],
    overwrite: bool,
    *,
    device: str | None,
    precision: str,
) -> Any:
    """``upscale --adapt``: a copy of MODEL fine-tuned on the one INPUT (with its guides for a guided
    model; the output checked first)."""
    from .fileutil import check_output
    from .selfsupervised import adapt

    if len(paths) != 2 or os.path.isdir(paths[0]):
        raise click.UsageError("--adapt fine-tunes on one input: give one INPUT file and an OUTPUT")
    if not os.path.isdir(paths[1]):
        check_output(paths[1], overwrite=overwrite, inputs=[paths[0]])
    return adapt(
        model,
        paths[0],
        minutes=minutes,
        guide=list(guides) or None,
        device=device,
        precision=precision,
        progress=not ctx.obj["quiet"],
    )


def _parse_thickness(ctx: click.Context, param: click.Parameter, value: str | None) -> float | str | None:
    """``--thickness``: a positive number of mm, or ``auto``."""
    if value is None or value == "auto":
        return value
    try:
        mm = float(value)
    except ValueError:
        mm = float("nan")
    if not mm > 0 or mm == float("inf"):
        raise click.BadParameter(f"{value!r} is not a thickness: give a positive number of mm or 'auto'")
    return mm


@main.command(short_help="Super-resolve an image with a network trained on the image itself.")
@click.argument("input", type=click.Path(dir_okay=False, path_type=str))
@click.argument("output", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--scale",
    type=click.IntRange(2),
    default=None,
    help="Factor across the thick axis (default: from the voxel sizes), or along every axis of an isotropic image.",
)
@click.option(
    "--guide",
    "guides",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="A co-registered guide on the output grid, for Wald's protocol on INPUT (repeat: finest first).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    show_default=True,
    help="Time budget for training and inference.",
)
@click.option(
    "--save-model",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Folder for the trained model, for 'aesr-sci upscale' on other scans of the same protocol.",
)
@click.option(
    "--thickness",
    callback=_parse_thickness,
    default=None,
    metavar="MM|auto",
    help="Slice thickness in mm, the slice profile's width (default: the spacing across the thick axis); "
    "'auto' fits the width from the data too.",
)
@_precision_option
@_device_option
@_tta_option
@_consistency_option
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT and a model in --save-model if they exist.")
@click.pass_context
@_user_errors
def selfsr(
    ctx: click.Context,
    input: str,
    output: str,
    scale: int | None,
    guides: tuple[str, ...],
    minutes: float,
    save_model: str | None,
    thickness: float | str | None,
    precision: str,
    device: str | None,
    tta: bool,
    consistency: bool,
    overwrite: bool,
) -> None:
    """Super-resolve INPUT into OUTPUT with a network trained on INPUT alone, within --minutes.

    A thick-slice NIfTI (e.g. 0.9 x 0.9 x 5 mm) teaches a 2D network what its thin in-plane axes
    look like through its own slice profile (as wide as the slice thickness, its shape fitted
    from the data); the network is applied
    across the thick axis in both orthogonal planes and the output lies on the field-of-view
    preserving grid. An isotropic image needs --scale: the network learns to undo the image
    degraded one scale further. With --guide (a co-registered image on the output grid, such as
    Sentinel-2's 10 m bands for its 20 m bands) a guided network learns by Wald's protocol on
    INPUT itself; the scale is INPUT's pixel size over the guide's and the output lies on the
    guide's grid. --save-model keeps the model for 'aesr-sci upscale MODEL IN OUT --guide G'.

    \b
    Example:
      aesr-sci selfsr t2_thick.nii.gz t2_thin.nii.gz --minutes 10 --save-model t2_protocol/
      aesr-sci selfsr t1_1mm.nii.gz t1_05mm.nii.gz --scale 2
      aesr-sci selfsr scene_20m.tif scene_20m_at_10m.tif --guide scene_10m.tif --minutes 10 --tta --consistency
    """
    from .fileutil import check_output
    from .io import write
    from .selfsupervised import selfsr as selfsr_api

    check_output(output, overwrite=overwrite, inputs=[input, *guides])
    out = selfsr_api(
        input,
        scale=scale,
        guide=list(guides) or None,
        minutes=minutes,
        save_model=save_model,
        thickness=thickness,
        precision=precision,
        device=device,
        tta=tta,
        consistency=consistency,
        overwrite=overwrite,
        progress=not ctx.obj["quiet"],
    )
    write(out, output, overwrite=overwrite)
    click.echo(f"wrote {output}: {'x'.join(map(str, out.spatial_shape))}", err=True)


# ------------------------------------------------------------------------------------- sample
@main.command(short_help="Print the paths of the default sample (MNI152 T1, no download).")
@click.option("--split", type=click.Choice(["train", "val", "all"]), default="all", show_default=True)
@_user_errors
def sample(split: str) -> None:
    """Print the default sample's NIfTI paths, writing them on first use.

    The sample is the MNI152 T1 template carried inside nilearn's wheel, cut into a training slab
    and a validation slab that share no voxels. 'recipes/mri_x2.yaml' trains on it when no
    data.paths are given.

    \b
    Example:
      aesr-sci evaluate runs/mri_x2 $(aesr-sci sample --split val)
    """
    from .data.template import sample_paths

    for path in sample_paths(split):
        click.echo(path)


# ------------------------------------------------------------------------------------- export
@main.command(short_help="Export a trained model to TorchScript or ONNX.")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torchscript"]),
    default=None,
    help="Default: from OUTPUT's extension (.onnx, .pt).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@_user_errors
def export(model: str, output: str, fmt: str | None, overwrite: bool) -> None:
    """Export MODEL's network to OUTPUT for use outside Python, and check it matches PyTorch.

    \b
    Example:
      aesr-sci export runs/mri_x2 mri_x2.onnx
    """
    from .checkpoint import load_model, model_files
    from .fileutil import check_output
    from .nets.export import export_model

    check_output(output, overwrite=overwrite, inputs=model_files(model))
    loaded = load_model(model)
    report = export_model(
        loaded.network, output, fmt=fmt, example_shape=loaded.example_shape(), overwrite=overwrite
    )
    click.echo(f"wrote {output} (max difference from PyTorch: {report['max_abs_diff']:.2e})")


# --------------------------------------------------------------------------------------- qgis
@main.group(short_help="Run aesr-sci from QGIS's Processing toolbox.")
def qgis() -> None:
    """Install the QGIS plugin whose Processing algorithms run this aesr-sci command."""


@qgis.command("install", short_help="Install the Processing provider into a QGIS profile.")
@click.option("--profile", default="default", show_default=True, help="QGIS user profile.")
@click.option(
    "--qgis-dir",
    type=click.Path(path_type=str),
    default=None,
    help="QGIS's settings folder holding profiles/ (default: ~/.local/share/QGIS/QGIS3 or the platform's).",
)
@click.option("--overwrite", is_flag=True, help="Replace an installed copy that differs.")
@_user_errors
def qgis_install(profile: str, qgis_dir: str | None, overwrite: bool) -> None:
    """Copy the aesr-sci plugin into a QGIS profile; it runs this environment's aesr-sci.

    Prints the plugin's folder; then enable it in QGIS (Plugins > Manage and Install Plugins >
    Installed) or headless with 'qgis_process plugins enable aesr_sci_processing'. The algorithms
    appear in the Processing toolbox under aesr-sci.

    \b
    Example:
      aesr-sci qgis install
      aesr-sci qgis install --profile work --overwrite
    """
    from .qgis import PLUGIN_NAME, install

    done = install(profile, qgis_dir=qgis_dir, overwrite=overwrite)
    click.echo(str(done.path))
    state = "installed" if done.changed else "already installed"
    click.echo(
        f"{state} for QGIS profile '{profile}' (runs {done.executable}); enable it in QGIS under Plugins > "
        f"Manage and Install Plugins > Installed, or run 'qgis_process plugins enable {PLUGIN_NAME}'",
        err=True,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
