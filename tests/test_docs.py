"""The documentation cannot drift: the code blocks of README.md and docs/*.md run here.

Each page's ``python`` blocks run in order, in one namespace (a tutorial's cells build on each
other), in a temporary folder that holds small synthetic stand-ins for the files they name and
untrained stand-in models for the runs they use. Each ``aesr-sci`` command in a ``bash`` block is
checked against the command line: the command exists and takes every option it is given. A block
preceded by ``<!-- skip-test: REASON -->`` is not run (real data, long training); the reason is
required.
"""

from __future__ import annotations

import re
import shlex
import zipfile
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from conftest import save_guided_model_dir, save_model_dir, write_geotiff, write_nifti

from aesr_sci.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(?:<!--\s*skip-test:(?P<skip>[^>]*)-->\s*\n)?^```(?P<lang>python|bash)\n(?P<code>.*?)^```",
    re.S | re.M,
)


def blocks(page: Path, lang: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of the ``lang`` blocks of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("skip"))
        for m in _BLOCK.finditer(text)
        if m.group("lang") == lang
    ]


def _affine(zooms: tuple[float, ...]) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (-90.0, -126.0, -72.0)
    return affine


def _stand_ins(folder: Path) -> None:
    """The files and runs that the documentation names, small and synthetic."""
    for name, shape, zooms in [
        ("t1_2mm.nii.gz", (20, 24, 18), (2.0, 2.0, 2.0)),
        ("val_2mm.nii.gz", (20, 24, 18), (2.0, 2.0, 2.0)),
        ("sub-01_T1w.nii.gz", (24, 28, 20), (1.0, 1.0, 1.0)),
        ("bids/sub-01/anat/sub-01_T1w.nii.gz", (20, 24, 18), (2.0, 2.0, 2.0)),
        ("bids/sub-02/anat/sub-02_T1w.nii.gz", (20, 24, 18), (2.0, 2.0, 2.0)),
        ("T2_AX_TSE.nii.gz", (48, 48, 10), (0.9, 0.9, 5.5)),
    ]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_nifti(folder / name, shape=shape, affine=_affine(zooms))
    (folder / "bids" / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.9.0"}\n')
    s2 = ["B05", "B06", "B07", "B8A", "B11", "B12"]
    write_geotiff(folder / "T18SVG_20m.tif", bands=6, height=272, width=264, band_names=s2)
    landsat = [f"SR_B{i}" for i in range(1, 8)]
    stack = write_geotiff(
        folder / "LC08_stack.tif", bands=7, height=48, width=40, nodata=None, band_names=landsat
    )
    import rasterio
    from rasterio.shutil import copy as gdal_copy

    with rasterio.open(stack, "r+") as dst:  # Landsat fill: 0, not flagged
        data = dst.read()
        data[:, :, :4] = 0
        dst.write(data)
    gdal_copy(stack, folder / "mosaic.vrt", driver="VRT")
    with zipfile.ZipFile(folder / "LC08_scene.zip", "w") as z:
        z.write(stack, "LC08_stack.tif")
    save_model_dir(folder / "runs" / "mri_x2", spatial_dims=3, method="kspace", patch=16)
    save_model_dir(folder / "runs" / "sentinel2_x2", spatial_dims=2, channels=6, method="gaussian", patch=32)
    save_model_dir(folder / "runs" / "landsat_x2", spatial_dims=2, channels=6, method="gaussian", patch=32)
    _sentinel2_stand_ins(folder)
    (folder / "recipes").symlink_to(ROOT / "recipes")


def _sentinel2_stand_ins(folder: Path) -> None:
    """A Sentinel-2 product a_{10,20,60}m.tif on one UTM corner, and untrained guided x2 and x6 runs."""
    from affine import Affine

    bands = {
        10: ["B2", "B3", "B4", "B8"],
        20: ["B5", "B6", "B7", "B8A", "B11", "B12"],
        60: ["B1", "B9", "B10"],
    }
    for res, names in bands.items():
        n = 720 // res  # 720 m a side: 72, 36 and 12 pixels
        grid = Affine(float(res), 0.0, 585000.0, 0.0, -float(res), 4415000.0)
        write_geotiff(
            folder / f"a_{res}m.tif",
            bands=len(names),
            height=n,
            width=n,
            band_names=names,
            transform=grid,
            nodata_border=1,
            seed=res,
        )
    runs = folder / "runs"
    save_guided_model_dir(runs / "sentinel2_guided_x2", scale=2, channels=6, guide_bands=bands[10])
    save_guided_model_dir(
        runs / "sentinel2_guided_x6", scale=6, channels=3, guide_bands=bands[10] + bands[20], guide_files=2
    )


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import aesr_sci.data.template as template

    _stand_ins(tmp_path)
    monkeypatch.chdir(tmp_path)
    # the MNI152 sample (197 x 233 x 76 voxels) stands in as a small volume, as every file does here
    monkeypatch.setattr(template, "sample_paths", lambda split="all": [str(tmp_path / "sub-01_T1w.nii.gz")])
    return tmp_path


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, workspace: Path) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for line, code, skip in blocks(page, "python"):
        if skip is not None:
            assert skip.strip(), f"{page.name}:{line}: a skip-test comment needs its reason"
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"{page.name}, block at line {line}: {type(exc).__name__}: {exc}")
        ran += 1
    assert ran, f"{page.name}: every python block is skipped"


def _aesr_commands(code: str) -> list[list[str]]:
    """The argument lists of the ``aesr-sci`` commands in a shell block."""
    commands = []
    for raw in code.replace("\\\n", " ").splitlines():
        line = raw.split(" #")[0] if not raw.lstrip().startswith("#") else ""
        inner = re.findall(r"\$\(([^()]*)\)", line)  # $(aesr-sci sample ...) is an argument
        for part in [re.sub(r"\$\([^()]*\)", "SUBST", line), *inner]:
            for match in re.finditer(r"(?<![\w/.-])aesr-sci\s+([^|;&`]*)", part):
                commands.append(shlex.split(match.group(1)))
    return commands


def _check_command(args: list[str], where: str) -> None:
    command: click.Command = main
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        assert args[0] in command.commands, f"{where}: no command 'aesr-sci {args[0]}'"
        command, args = command.commands[args[0]], args[1:]
    known = {opt for p in [*command.params, *main.params] for opt in (*p.opts, *p.secondary_opts)}
    known |= {"-h", "--help", "--version"}
    for arg in args:
        if arg.startswith("-") and arg not in ("-",):
            option = arg.split("=")[0]
            assert option in known, f"{where}: 'aesr-sci {command.name}' has no option {option}"


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=lambda p: p.name)
def test_shell_commands_exist_with_their_options(page: Path) -> None:
    checked = 0
    for line, code, _skip in blocks(page, "bash"):
        for args in _aesr_commands(code):
            _check_command(args, f"{page.name}:{line}")
            checked += 1
    assert checked or page.name in ("benchmarks.md",), f"{page.name}: bash blocks without aesr-sci commands"


def test_the_checker_catches_drift() -> None:
    assert _aesr_commands(
        "aesr-sci upscale m a b --tta  # note\naesr-sci evaluate m $(aesr-sci sample) --json x"
    ) == [
        ["upscale", "m", "a", "b", "--tta"],
        ["evaluate", "m", "SUBST", "--json", "x"],
        ["sample"],
    ]
    with pytest.raises(AssertionError, match="has no option --tiles"):
        _check_command(["upscale", "m", "a", "b", "--tiles", "4"], "x.md:1")
    with pytest.raises(AssertionError, match="no command 'aesr-sci upscal'"):
        _check_command(["upscal", "m"], "x.md:1")
    _check_command(["qgis", "install", "--profile", "work"], "x.md:1")
