"""What every benchmark script does with its table: print it, and write it to ``--out`` if given."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

#: the shared data folder: AESR_SCI_DATA, else ../shared/data beside the checkout
DATA = Path(os.environ.get("AESR_SCI_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def emit(lines: Sequence[str], out: Path | None) -> None:
    """Print the markdown ``lines`` and write them to ``out`` (when not ``None``)."""
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if out is not None:
        out.write_text(text)
