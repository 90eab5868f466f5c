"""The QGIS plugin: what it imports, its installer, its command runner, and a headless run in QGIS.

The end-to-end tests run Debian's ``qgis_process.bin`` (``apt-get install qgis python3-qgis``) with
``QT_QPA_PLATFORM=offscreen`` and ``HOME`` in ``tmp_path``, and skip when it is absent. The other
tests need no QGIS: the plugin's runner is plain Python.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save_guided_model_dir, save_model_dir, write_geotiff

from aesr_sci import __version__
from aesr_sci.cli import main
from aesr_sci.qgis import PLUGIN_NAME, default_qgis_dir, plugin_source
from aesr_sci.qgis.aesr_sci_processing import runner

QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")
REPO = Path(__file__).resolve().parents[1]
ALLOWED_IMPORTS = {"qgis", "PyQt5", "processing", "__future__"}


# ------------------------------------------------------------------------------ the plugin files
def _foreign_imports(path: Path) -> list[str]:
    """Top-level modules that ``path`` imports and that are neither QGIS's, PyQt's nor stdlib."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        found += [n for n in names if n.split(".")[0] not in ALLOWED_IMPORTS | sys.stdlib_module_names]
    return found


def test_plugin_imports_only_qgis_pyqt_and_the_standard_library(tmp_path: Path) -> None:
    files = sorted(plugin_source().glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "algorithms.py", "provider.py", "runner.py"}
    for path in files:
        assert _foreign_imports(path) == [], path
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom qgis.core import QgsApplication\nimport torch\nfrom aesr_sci import io\n")
    assert _foreign_imports(bad) == ["torch", "aesr_sci"]


def test_plugin_metadata_names_the_package_version() -> None:
    text = (plugin_source() / "metadata.txt").read_text(encoding="utf-8")
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert fields["version"] == __version__
    assert fields["hasProcessingProvider"] == "yes"
    assert {"name", "qgisMinimumVersion", "description", "about", "author", "email"} <= set(fields)


# ---------------------------------------------------------------------------------- the installer
def _install(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, ["qgis", "install", *args], env=env)


def test_install_copies_the_plugin_and_records_this_aesr_sci(tmp_path: Path) -> None:
    result = _install("--qgis-dir", str(tmp_path), "--profile", "work")
    assert result.exit_code == 0, result.output
    target = tmp_path / "profiles" / "work" / "python" / "plugins" / PLUGIN_NAME
    assert result.stdout.strip() == str(target)
    assert f"qgis_process plugins enable {PLUGIN_NAME}" in result.stderr
    config = json.loads((target / "config.json").read_text())
    assert config["version"] == __version__
    exe = Path(config["executable"])
    assert exe.is_absolute() and exe.is_file() and exe.name.startswith("aesr-sci")
    for source in plugin_source().glob("*.py"):
        assert (target / source.name).read_bytes() == source.read_bytes()
    again = _install("--qgis-dir", str(tmp_path), "--profile", "work")
    assert again.exit_code == 0 and "already installed" in again.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == [PLUGIN_NAME]


def test_install_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["qgis", "install", "--help"])
    assert result.exit_code == 0 and "Example" in result.output and "--qgis-dir" in result.output
    assert "install" in CliRunner().invoke(main, ["qgis", "--help"]).output


def test_a_different_install_is_kept_unless_overwrite(tmp_path: Path) -> None:
    assert _install("--qgis-dir", str(tmp_path)).exit_code == 0
    target = tmp_path / "profiles" / "default" / "python" / "plugins" / PLUGIN_NAME
    (target / "config.json").write_text('{"executable": "/elsewhere/aesr-sci"}\n')
    refused = _install("--qgis-dir", str(tmp_path))
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and "--overwrite" in refused.output
    assert "/elsewhere/" in (target / "config.json").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == [PLUGIN_NAME]  # no staging left behind
    replaced = _install("--qgis-dir", str(tmp_path), "--overwrite")
    assert replaced.exit_code == 0 and "/elsewhere/" not in (target / "config.json").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == [PLUGIN_NAME]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--qgis-dir", "missing"], "no such folder"),
        (["--profile", "a/b"], "give a QGIS profile name"),
    ],
)
def test_install_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / a) if a == "missing" else a for a in args]
    result = _install(*args, env={"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": ""})
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists() and not (tmp_path / "home" / ".local").exists()


def test_default_profile_folder_follows_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    if sys.platform.startswith("linux"):
        assert default_qgis_dir() == tmp_path / ".local" / "share" / "QGIS" / "QGIS3"
    result = _install()
    assert result.exit_code == 0, result.output
    assert (
        Path(result.stdout.strip())
        == default_qgis_dir() / "profiles" / "default" / "python" / "plugins" / PLUGIN_NAME
    )


# ------------------------------------------------------------------------------------ the runner
class Feedback:
    """Records what the runner reports, as QgsProcessingFeedback would receive it."""

    def __init__(self, cancel_at: float | None = None) -> None:
        self.progress: list[float] = []
        self.console: list[str] = []
        self.commands: list[str] = []
        self.texts: list[str] = []
        self.cancel_at = cancel_at

    def setProgressText(self, text: str) -> None:
        self.texts.append(text)

    def setProgress(self, value: float) -> None:
        self.progress.append(value)

    def isCanceled(self) -> bool:
        return self.cancel_at is not None and any(p >= self.cancel_at for p in self.progress)

    def pushConsoleInfo(self, text: str) -> None:
        self.console.append(text)

    def pushCommandInfo(self, text: str) -> None:
        self.commands.append(text)


def _fake_command(folder: Path, body: str) -> str:
    """An executable Python script standing in for ``aesr-sci``."""
    path = folder / "fake-aesr-sci"
    path.write_text(f"#!{sys.executable}\nimport sys, time\nfrom pathlib import Path\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_runner_reports_tqdm_progress_and_returns_stdout(tmp_path: Path) -> None:
    exe = _fake_command(
        tmp_path,
        "for band in range(2):\n"
        "    for i in range(5):\n"
        "        sys.stderr.write(f'\\r{i * 25:3d}%|##        | {i}/4 [00:00<00:00]'); sys.stderr.flush()\n"
        "    sys.stderr.write('\\n')\n"  # tqdm ends its bar with a newline
        "print('wrote out.tif', file=sys.stderr)\nprint(sys.argv[1:])",
    )
    feedback = Feedback()
    out = runner.run(exe, ["upscale", "a b"], feedback)
    assert out.strip() == "['upscale', 'a b']"
    assert feedback.progress == [0.0, 25.0, 50.0, 75.0, 100.0] * 2 + [100.0]
    assert feedback.texts == ["aesr-sci: pass 2"]
    assert feedback.console == ["wrote out.tif"]
    assert feedback.commands == [f'{exe} upscale "a b"']


def test_runner_turns_the_one_line_error_into_the_exception(tmp_path: Path) -> None:
    exe = _fake_command(tmp_path, "print('Error: no model at /x: give a run', file=sys.stderr); sys.exit(2)")
    feedback = Feedback()
    with pytest.raises(runner.CommandError) as info:
        runner.run(exe, ["upscale"], feedback)
    assert str(info.value) == "no model at /x: give a run"
    assert feedback.console == []
    crash = _fake_command(tmp_path, "raise RuntimeError('a bug')")
    with pytest.raises(runner.CommandError, match=r"exit status 1: .*RuntimeError: a bug"):
        runner.run(crash, [], Feedback())


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_cancel_interrupts_the_command_and_removes_partial_output(tmp_path: Path, sigint: str) -> None:
    """Canceled within seconds, also when the command inherits an ignored SIGINT (QGIS started by
    ``nohup`` or in the background of a script): it is terminated then."""
    import signal

    if sigint == "ignored" and not Path("/proc/self/status").is_file():
        pytest.skip("reading a process's ignored signals needs Linux's /proc")
    previous = signal.signal(
        signal.SIGINT, signal.SIG_IGN if sigint == "ignored" else signal.default_int_handler
    )
    try:
        _cancel_and_check(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _cancel_and_check(tmp_path: Path) -> None:
    out = tmp_path / "out.tif"
    exe = _fake_command(
        tmp_path,
        f"Path({str(tmp_path)!r}, '.out.x1y2.part.tif').write_bytes(b'partial')\n"
        "for i in range(1000):\n"
        "    sys.stderr.write(f'\\r{i % 100:3d}%|'); sys.stderr.flush(); time.sleep(0.05)",
    )
    (tmp_path / "unrelated.tif").write_bytes(b"keep")
    started = time.monotonic()
    with pytest.raises(runner.CommandError, match="canceled"):
        runner.run(exe, ["upscale"], Feedback(cancel_at=10), outputs=(str(out),))
    assert time.monotonic() - started < 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-aesr-sci", "unrelated.tif"]


def test_missing_commands_and_options_are_named(tmp_path: Path) -> None:
    exe = _fake_command(
        tmp_path,
        "if sys.argv[1:] == ['upscale', '--help']:\n"
        "    print('Usage: aesr-sci upscale [OPTIONS] MODEL PATHS...\\n  --tta  Average.\\n  --cog  COG.')\n"
        "else:\n    sys.exit(2)",
    )
    runner.require(exe, "upscale", ("--tta", "--cog"))
    with pytest.raises(
        runner.CommandError, match=r"does not support guides \('upscale' has no --guide option\)"
    ):
        runner.require(exe, "upscale", ("--tta", "--guide"), "guides")
    with pytest.raises(runner.CommandError, match="has no 'selfsr' command"):
        runner.require(exe, "selfsr", (), "self-supervised super-resolution")
    with pytest.raises(runner.CommandError, match=r"not an executable file.*aesr-sci qgis install"):
        runner.check_executable(str(tmp_path / "nowhere"))


_ARGUMENTS = """
import json, sys
sys.path.insert(0, sys.argv[1])
from aesr_sci_processing import algorithms
alg = getattr(algorithms, sys.argv[2])()
alg.initAlgorithm()
values = json.loads(sys.argv[3])
order = [d.name() for d in alg.parameterDefinitions() if d.name() in values]
print(json.dumps([alg.arguments({name: values[name] for name in order}), order]))
"""
_GUIDED = {"INPUT": "in_20m.tif", "OUTPUT": "out.tif", "GUIDE": "g_10m.tif", "GUIDE_2": "g_20m.tif"}
_GUIDED_ARGS = ["in_20m.tif", "out.tif", "--guide", "g_10m.tif", "--guide", "g_20m.tif"]


def _system_qgis_python() -> bool:
    probe = ["/usr/bin/python3", "-c", "import qgis.core"]
    return (
        Path(probe[0]).is_file() and subprocess.run(probe, capture_output=True, check=False).returncode == 0
    )


@pytest.mark.skipif(not _system_qgis_python(), reason="QGIS's Python bindings are not installed")
@pytest.mark.parametrize(
    ("algorithm", "values", "expected"),
    [
        ("SelfsrAlgorithm", {**_GUIDED, "MINUTES": "0.5"}, ["selfsr", *_GUIDED_ARGS, "--minutes", "0.5"]),
        (
            "SelfsrAlgorithm",
            {**_GUIDED, "TTA": "true", "CONSISTENCY": "true"},
            ["selfsr", *_GUIDED_ARGS, "--tta", "--consistency"],
        ),
        (
            "GuidedUpscaleAlgorithm",
            {**_GUIDED, "MODEL": "m", "ADAPT": "10.0"},
            ["upscale", "m", *_GUIDED_ARGS, "--adapt", "10.0"],
        ),
    ],
)
def test_qgis_algorithms_pass_guides_and_options_to_the_command_line(
    tmp_path: Path, algorithm: str, values: dict, expected: list
) -> None:
    """GUIDE and GUIDE_2 become ``--guide`` twice, finest first; ADAPT is ``--adapt``, TTA and
    CONSISTENCY are flags; and the command line has the options the algorithm passes."""
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    run = subprocess.run(
        ["/usr/bin/python3", "-c", _ARGUMENTS, str(plugin_source().parent), algorithm, json.dumps(values)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    (args, options, outputs), order = json.loads(run.stdout.strip().splitlines()[-1])
    assert args == expected
    assert order.index("GUIDE") < order.index("GUIDE_2") and outputs == ["out.tif"]
    help_text = CliRunner().invoke(main, [expected[0], "--help"]).output
    assert all(option in help_text for option in options)


# ------------------------------------------------------------------------------ QGIS, headless
needs_qgis = pytest.mark.skipif(not QGIS_PROCESS.is_file(), reason=f"QGIS is not installed ({QGIS_PROCESS})")


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose HOME holds a QGIS profile with the plugin installed and enabled."""
    home = tmp_path_factory.mktemp("home")
    env = {
        **os.environ,
        "HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(home),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    env.pop("XDG_DATA_HOME", None)
    installed = _install(env={"HOME": str(home), "XDG_DATA_HOME": ""})
    assert installed.exit_code == 0, installed.output
    enable = _qgis_process(["plugins", "enable", PLUGIN_NAME], env)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    return env


def _qgis_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(QGIS_PROCESS), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@needs_qgis
def test_qgis_upscale_matches_the_command_line(tmp_path: Path, qgis_env: dict[str, str]) -> None:
    import rasterio

    listed = _qgis_process(["list"], qgis_env).stdout
    for alg in ("aesrsci:upscale", "aesrsci:upscaleguided", "aesrsci:selfsr", "aesrsci:models"):
        assert alg in listed
    src = write_geotiff(tmp_path / "in.tif", bands=3, height=40, width=36)
    before = src.read_bytes()
    model = save_model_dir(tmp_path, channels=1, patch=16)
    via_qgis, via_cli = tmp_path / "qgis.tif", tmp_path / "cli.tif"
    run = _qgis_process(
        ["run", "aesrsci:upscale", "--", f"INPUT={src}", f"MODEL={model}", f"OUTPUT={via_qgis}"], qgis_env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cli = CliRunner().invoke(main, ["upscale", str(model), str(src), str(via_cli)])
    assert cli.exit_code == 0, cli.output
    with rasterio.open(via_qgis) as q, rasterio.open(via_cli) as c, rasterio.open(src) as s:
        assert q.crs == c.crs == s.crs
        assert q.transform == c.transform and q.transform.a == s.transform.a / 2
        assert q.shape == c.shape == (80, 72)
        assert q.nodata == c.nodata and q.descriptions == c.descriptions == ("B1", "B2", "B3")
        np.testing.assert_array_equal(q.read(), c.read())
    assert src.read_bytes() == before


@needs_qgis
def test_qgis_guided_upscale_matches_the_command_line(tmp_path: Path, qgis_env: dict[str, str]) -> None:
    """aesrsci:upscaleguided runs ``aesr-sci upscale --guide`` (twice for the x6 model's two guide files):
    the output lands on the guide's grid and equals the command line's, byte for byte."""
    import rasterio
    from affine import Affine

    def grid(pixel: float) -> Affine:
        return Affine(pixel, 0.0, 585000.0, 0.0, -pixel, 4415000.0)

    for scale, guides in ((2, {10: 2}), (6, {10: 2, 20: 1})):
        folder = tmp_path / f"x{scale}"
        folder.mkdir()
        target = write_geotiff(
            folder / "target.tif", bands=2, height=16, width=14, nodata_border=1, transform=grid(10.0 * scale)
        )
        files = [
            write_geotiff(
                folder / f"g{res}.tif",
                bands=n,
                height=16 * scale * 10 // res,
                width=14 * scale * 10 // res,
                nodata_border=1,
                transform=grid(float(res)),
                seed=res,
            )
            for res, n in guides.items()
        ]
        names = [f"G{i}" for i in range(sum(guides.values()))]
        model = save_guided_model_dir(folder, scale=scale, guide_bands=names, guide_files=len(files))
        via_qgis, via_cli = folder / "qgis.tif", folder / "cli.tif"
        params = [f"INPUT={target}", f"MODEL={model}", f"GUIDE={files[0]}", f"OUTPUT={via_qgis}"]
        params += [f"GUIDE_2={files[1]}"] if len(files) > 1 else []
        run = _qgis_process(["run", "aesrsci:upscaleguided", "--", *params], qgis_env)
        assert run.returncode == 0, run.stdout + run.stderr
        guide_args = [x for f in files for x in ("--guide", str(f))]
        cli = CliRunner().invoke(main, ["-q", "upscale", str(model), str(target), str(via_cli), *guide_args])
        assert cli.exit_code == 0, cli.output
        with rasterio.open(via_qgis) as q, rasterio.open(via_cli) as c, rasterio.open(files[0]) as g:
            assert q.crs == c.crs == g.crs and q.transform == c.transform == g.transform
            assert q.shape == c.shape == g.shape
            assert q.descriptions == c.descriptions == ("B1", "B2") and q.nodata == c.nodata == 0
            np.testing.assert_array_equal(q.read(), c.read())


@needs_qgis
def test_qgis_reports_a_bad_model_as_one_line(tmp_path: Path, qgis_env: dict[str, str]) -> None:
    src = write_geotiff(tmp_path / "in.tif", bands=1)
    out = tmp_path / "out.tif"
    run = _qgis_process(
        ["run", "aesrsci:upscale", "--", f"INPUT={src}", f"MODEL={tmp_path / 'no_run'}", f"OUTPUT={out}"],
        qgis_env,
    )
    text = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"no model at {tmp_path / 'no_run'}: give a training run directory" in text
    assert "Traceback" not in text and "Error: " not in text
    assert not out.exists()
