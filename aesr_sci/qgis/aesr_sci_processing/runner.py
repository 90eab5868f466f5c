"""Running the ``aesr-sci`` command for QGIS: progress, cancellation and one-line errors.

Standard library only: QGIS's own Python runs this file, and it must never import torch or
aesr_sci. The algorithms give :func:`run` a feedback object (``QgsProcessingFeedback``, or anything
with ``setProgress``, ``setProgressText``, ``isCanceled``, ``pushCommandInfo`` and
``pushConsoleInfo``) and turn
:class:`CommandError` into ``QgsProcessingException``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
CONFIG_FILE = PLUGIN_DIR / "config.json"
COMMAND = "aesr-sci"
# a tqdm bar: " 42%|####      | 21/50 [00:03<00:04, 7.1it/s]"
_PERCENT = re.compile(r"(\d{1,3})%\|")
_HELP_CACHE: dict[tuple[str, str], str] = {}
_SETTINGS_HINT = "Processing > Options > Providers > aesr-sci"


class CommandError(Exception):
    """The command failed; the message is its one-line error (or the tail of its output)."""


def recorded_executable() -> str:
    """The ``aesr-sci`` that ``aesr-sci qgis install`` recorded, else the one on PATH, else ''."""
    try:
        recorded = json.loads(CONFIG_FILE.read_text(encoding="utf-8")).get("executable", "")
    except (OSError, ValueError, AttributeError):
        recorded = ""
    if recorded and Path(recorded).is_file():
        return str(recorded)
    return shutil.which(COMMAND) or ""


def check_executable(path: str) -> str:
    """Return ``path`` if it is an executable file, else raise a one-line :class:`CommandError`."""
    if path and Path(path).is_file() and os.access(path, os.X_OK):
        return path
    where = f"'{path}' is not an executable file" if path else "aesr-sci was not found on PATH"
    raise CommandError(
        f"{where}: run 'aesr-sci qgis install' in the Python environment that has aesr-sci, "
        f"or set its path in {_SETTINGS_HINT}"
    )


def _environment() -> dict[str, str]:
    """QGIS's environment without the variables that tie a child Python to QGIS's interpreter."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def help_text(executable: str, command: str) -> str:
    """``aesr-sci COMMAND --help`` (cached); '' when the command does not exist."""
    key = (executable, command)
    if key not in _HELP_CACHE:
        proc = subprocess.run(
            [executable, command, "--help"],
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=_environment(),
            timeout=120,
        )
        _HELP_CACHE[key] = proc.stdout if proc.returncode == 0 else ""
    return _HELP_CACHE[key]


def require(executable: str, command: str, options: tuple[str, ...] = (), feature: str = "") -> None:
    """Raise :class:`CommandError` unless ``aesr-sci COMMAND`` exists and offers every option."""
    text = help_text(executable, command)
    what = feature or f"'{command}'"
    if not text:
        raise CommandError(
            f"the installed aesr-sci ({executable}) has no '{command}' command, so it does not support "
            f"{what}: upgrade aesr-sci, or set another aesr-sci in {_SETTINGS_HINT}"
        )
    missing = [opt for opt in options if not re.search(rf"(^|[\s,]){re.escape(opt)}\b", text)]
    if missing:
        raise CommandError(
            f"the installed aesr-sci ({executable}) does not support {what} ('{command}' has no "
            f"{', '.join(missing)} option): upgrade aesr-sci, or set another aesr-sci in {_SETTINGS_HINT}"
        )


def _pump(stream, sink: queue.Queue) -> None:
    """Copy a byte stream into ``sink`` in chunks (a tqdm bar rewrites its line with '\\r')."""
    for chunk in iter(lambda: stream.read1(4096), b""):
        sink.put(chunk)
    sink.put(None)


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (Linux's ``/proc/PID/status``; False where unknown).

    A command started from a process that ignores SIGINT (QGIS launched in the background by a
    non-interactive shell, ``nohup``) inherits that: it would never see the interrupt.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _stop(proc: subprocess.Popen) -> None:
    """Interrupt the command so that it removes its temporary files (terminate it if it ignores
    the interrupt: :func:`run` removes them then); kill it if it lingers."""
    try:
        if os.name == "posix" and not _ignores_sigint(proc.pid):
            proc.send_signal(signal.SIGINT)
        else:
            proc.terminate()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def remove_partial(outputs: tuple[str, ...], since: float) -> None:
    """Delete outputs and the writer's temporary ``.NAME.*.part.EXT`` files made after ``since``."""
    for out in outputs:
        path = Path(out)
        suffix = "".join(path.suffixes)
        stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
        candidates = [path, *path.parent.glob(f".{stem}.*.part{suffix}")]
        for item in candidates:
            try:
                if item.is_file() and item.stat().st_mtime >= since - 1:
                    item.unlink()
            except OSError:
                pass


class _Lines:
    """Split stderr into lines, report tqdm percentages as progress, keep the other lines."""

    def __init__(self, feedback) -> None:
        self.feedback = feedback
        self.buffer = ""
        self.lines: list[str] = []
        self.percent = 0.0
        self.passes = 1  # a bar per band of a band-by-band model, per TTA transform...

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk.decode("utf-8", errors="replace")
        *complete, self.buffer = re.split(r"[\r\n]", self.buffer)
        for line in complete:
            self.line(line)

    def line(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        match = _PERCENT.search(text)
        if match:
            percent = min(100.0, float(match.group(1)))
            if percent < self.percent:
                self.passes += 1
                self.feedback.setProgressText(f"aesr-sci: pass {self.passes}")
            self.percent = percent
            self.feedback.setProgress(percent)
            return
        self.lines.append(text)
        if not text.startswith("Error: "):  # the error itself comes back as the exception
            self.feedback.pushConsoleInfo(text)

    def error(self, returncode: int) -> str:
        """The command's one-line error ('Error: ...'), else the tail of what it printed."""
        self.line(self.buffer)
        for text in reversed(self.lines):
            if text.startswith("Error: "):
                return text[len("Error: ") :]
        tail = " | ".join(self.lines[-3:]) or "no message"
        return f"aesr-sci stopped with exit status {returncode}: {tail}"


def run(
    executable: str, args: list[str], feedback, *, outputs: tuple[str, ...] = (), poll: float = 0.1
) -> str:
    """Run ``executable ARGS``; return its stdout.

    tqdm percentages on stderr go to ``feedback.setProgress`` (a new bar, for the next band or TTA
    transform, shows as "pass N" in ``feedback.setProgressText``), other stderr lines to
    ``feedback.pushConsoleInfo``. When ``feedback.isCanceled()`` turns true the command is
    interrupted and ``outputs`` (with the writer's temporary files) are removed. A non-zero exit
    raises :class:`CommandError` with the command's one-line error.
    """
    check_executable(executable)
    feedback.pushCommandInfo(subprocess.list2cmdline([executable, *args]))
    started = time.time()
    proc = subprocess.Popen(
        [executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=_environment(),
    )
    chunks: queue.Queue = queue.Queue()
    stdout: list[bytes] = []
    threads = [
        threading.Thread(target=_pump, args=(proc.stderr, chunks), daemon=True),
        threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True),
    ]
    for thread in threads:
        thread.start()
    lines = _Lines(feedback)
    canceled = False
    while True:
        if not canceled and feedback.isCanceled():
            canceled = True
            _stop(proc)
        try:
            chunk = chunks.get(timeout=poll)
        except queue.Empty:
            continue
        if chunk is None:
            break
        lines.feed(chunk)
    for thread in threads:
        thread.join()
    returncode = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    if canceled:
        remove_partial(outputs, started)
        raise CommandError("canceled")
    if returncode != 0:
        remove_partial(outputs, started)
        raise CommandError(lines.error(returncode))
    feedback.setProgress(100.0)
    return b"".join(stdout).decode("utf-8", errors="replace")
