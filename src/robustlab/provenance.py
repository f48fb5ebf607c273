"""What produced a result: versions, machine and command, saved beside every result."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from typing import Any

import torch

import robustlab


def provenance() -> dict[str, Any]:
    return {
        "robustlab": robustlab.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join(sys.argv),
        "time": now_iso(),
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
