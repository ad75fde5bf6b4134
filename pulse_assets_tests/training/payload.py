"""A pickle that runs a shell command when unpickled, and a check that it is live."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


class Payload:
    """Unpickled, it runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def is_live(path: Path, marker: Path, how: str) -> bool:
    """Unpickle a copy of ``path`` unsafely in another process; True if that created ``marker``.

    A copy under a neutral name: torch.load reads a ``.safetensors`` name as safetensors.
    """
    probe = marker.with_name("probe.bin")
    shutil.copyfile(path, probe)
    loaders = {
        "pickle": "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))",
        "torch": "import torch, sys; torch.load(sys.argv[1], weights_only=False)",
    }
    subprocess.run([sys.executable, "-c", loaders[how], str(probe)], capture_output=True)
    probe.unlink()
    live = marker.exists()
    marker.unlink(missing_ok=True)
    return live
