"""Outputs written atomically: a temporary file in the target folder, then a rename."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ._checks import FlowlabInputError


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_json(obj) -> str:
    """JSON with NaN/inf refused (they are errors in flowlab, not values)."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


#: Figure formats, chosen by the file extension.
FIGURE_FORMATS = ("png", "pdf", "svg")


def check_figure_path(path) -> Path:
    """The path of a figure, refused up front when its extension is not a known format."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
        raise FlowlabInputError(
            f"cannot write the figure {path}: the extension must be one of "
            + ", ".join("." + f for f in FIGURE_FORMATS)
        )
    return path


def save_figure(fig, path, *, dpi: int = 200) -> Path:
    """Render ``fig`` in memory and write it atomically (format from the extension)."""
    path = check_figure_path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lower().lstrip("."), dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def write_table(path, columns: dict[str, np.ndarray]) -> Path:
    """Write named 1-D columns as .npz or .csv, chosen by the file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in columns.items()})
        return atomic_write_bytes(path, buf.getvalue())
    if suffix == ".csv":
        names = list(columns)
        data = np.column_stack([np.asarray(columns[k], dtype=np.float64) for k in names])
        buf = io.StringIO()
        np.savetxt(buf, data, delimiter=",", header=",".join(names), comments="", fmt="%.17g")
        return atomic_write_text(path, buf.getvalue())
    raise FlowlabInputError(f"cannot write {path}: the extension must be .npz or .csv")

