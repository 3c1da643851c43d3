"""The record a node keeps of the end of its run (``out_dir/run-ended.json``), which ``fedx node`` watches.

Apart from :mod:`fedx.flower.operate` so that the ClientApp can write it without importing the node's supervisor.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["RUN_END_FILE", "record_run_end"]

#: Written by the ClientApp into the node's ``out_dir`` when it has answered a run's final message.
RUN_END_FILE = "run-ended.json"


def record_run_end(out_dir: str | os.PathLike[str], run_id: int) -> Path:
    """Note in the node's ``out_dir`` that it has answered the final message of run ``run_id``."""
    path = Path(out_dir) / RUN_END_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"run_id": int(run_id), "time": time.time()}))
    os.replace(tmp, path)
    return path
