"""Outputs written atomically: a temporary file in the target folder, then a rename.

A result made of several files (``basins`` grids, the demo) is one folder, built under a
hidden temporary sibling name (``.NAME.partial-*``) and renamed into place at the end
(:func:`atomic_folder`), so that an interrupt leaves either the old result or the new one,
never a mix. Output paths are checked before any work (:func:`check_output_file`,
:func:`check_output_dir`). Files and folders are created with the permissions the umask
allows (as ``open`` would), not the 0600/0700 of ``mkstemp``/``mkdtemp``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from flowlab.engine.checks import FlowlabInputError


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _existing_ancestor(path: Path, what: str) -> Path:
    """The nearest folder above ``path`` that exists; refused when it is a file."""
    folder = path.parent
    try:
        while not folder.exists():
            folder = folder.parent
    except OSError as exc:
        raise FlowlabInputError(f"cannot write {what} {path}: {exc.strerror} ({folder})") from None
    if not folder.is_dir():
        raise FlowlabInputError(f"cannot write {what} {path}: {folder} is a file, not a folder")
    return folder


def _check_writable(path: Path, what: str) -> None:
    """Refuse ``path`` unless its folder (or the nearest existing one above) accepts a new file.

    Tested by creating and removing an empty probe file (``os.access`` says yes to root even
    where writing fails, e.g. in /proc).
    """
    folder = _existing_ancestor(path, what)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".flowlab-probe-")
    except OSError as exc:
        raise FlowlabInputError(f"cannot write {what} {path}: the folder {folder} is not writable "
                                f"({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path, what: str = "--out") -> Path:
    """An output file, checked before any work: not a folder or device, in a writable folder."""
    if not str(path).strip():
        raise FlowlabInputError(f"{what}: the file name is empty")
    if str(path).endswith(("/", os.sep)) or Path(path).is_dir():
        raise FlowlabInputError(f"cannot write {what} {path}: it names a folder; give a file name")
    path = Path(path)
    if path.exists() and not path.is_file():
        raise FlowlabInputError(f"cannot write {what} {path}: it exists and is not a regular file")
    _check_writable(path, what)
    return path


def check_output_dir(path, what: str = "--out", replaceable=()) -> Path:
    """An output folder (a result built by :func:`atomic_folder`), checked before any work.

    It may not exist yet, be empty, or hold an earlier result that may be replaced: only the
    names in ``replaceable`` (or a folder for which the callable ``replaceable`` returns True).
    Anything else is refused, so that no file of the user's is ever removed.
    """
    if not str(path).strip():
        raise FlowlabInputError(f"{what}: the folder name is empty")
    path = Path(os.path.abspath(path))
    if path == Path(os.path.abspath(os.curdir)) or path in Path(os.path.abspath(os.curdir)).parents:
        raise FlowlabInputError(f"{what} {path}: give a new folder, not the current folder or one above it")
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise FlowlabInputError(f"cannot write {what} {path}: it is a file, not a folder")
        names = sorted(entry.name for entry in path.iterdir())
        ok = replaceable(path) if callable(replaceable) else set(names) <= set(replaceable)
        if names and not ok:
            raise FlowlabInputError(
                f"{what} {path} exists and holds other files ({', '.join(names[:3])}"
                f"{', ...' if len(names) > 3 else ''}); give a new or empty folder "
                "(an earlier result of the same command is replaced)")
    _check_writable(path, what)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unavailable."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def remove_stale_partials(path: Path) -> None:
    """Remove the temporary folders of ``path`` left by runs that were killed (their process is gone)."""
    import glob

    for stale in path.parent.glob(glob.escape(f".{path.name}.partial-") + "*"):
        pid = stale.name[len(path.name) + 10:].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # alive (or not ours to ask about): leave it


@contextmanager
def atomic_folder(path, what: str = "--out", replaceable=()):
    """Yield a temporary sibling folder to fill; rename it into place when the block ends.

    An exception (including KeyboardInterrupt) removes the temporary folder and leaves ``path``
    as it was. An existing ``path`` (checked by :func:`check_output_dir`) is swapped atomically
    where the system allows it (Linux), otherwise moved aside first, then removed.
    """
    path = check_output_dir(path, what, replaceable)
    created = [d for d in path.parents if not d.exists()]  # removed again if the block fails
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-{os.getpid()}-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        try:
            os.rename(tmp, path)  # atomic when path is absent or an empty folder
        except OSError:
            if not _exchange(tmp, path):
                os.rename(path, tmp.with_name(tmp.name + "-old"))
                os.rename(tmp, path)
                tmp = tmp.with_name(tmp.name + "-old")
            shutil.rmtree(tmp)  # now the old result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def atomic_write_bytes(path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling and a rename; ``mode``: the file's permissions
    (default: as ``open`` would create it under the umask)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask() if mode is None else mode)  # mkstemp makes 0600; default: as open() would
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


def json_float(x) -> float | None:
    """``x`` as a float for JSON: None where it is NaN or infinite."""
    x = float(x)
    return x if math.isfinite(x) else None


#: Figure formats, chosen by the file extension.
FIGURE_FORMATS = ("png", "pdf", "svg")


#: Table formats of :func:`write_table`, chosen by the file extension.
TABLE_FORMATS = ("npz", "csv")


def _format(path, formats, kind: str) -> str:
    """The format of ``path`` from its extension, refused unless it is one of ``formats``."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in formats:
        raise FlowlabInputError(f"cannot write the {kind} {path}: the extension must be one of "
                                + ", ".join("." + f for f in formats))
    return fmt


def check_figure_path(path, what: str = "--out") -> Path:
    """The path of a figure, refused up front (bad extension, unwritable) before any work."""
    _format(path, FIGURE_FORMATS, "figure")
    return check_output_file(path, what)


def check_table_path(path, what: str = "--trajectory") -> Path:
    """The path of a table (.npz or .csv), refused up front (bad extension, unwritable) before any work."""
    _format(path, TABLE_FORMATS, "table")
    return check_output_file(path, what)


def save_figure(fig, path, *, dpi: int = 200) -> Path:
    """Render ``fig`` in memory and write it atomically (format from the extension)."""
    fmt = _format(path, FIGURE_FORMATS, "figure")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def save_figures(fig, base, formats=("png", "pdf"), *, dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``base``.png, ``base``.pdf, ... (``base`` without extension): the figure's layout
    engine runs for the first format only and its layout, in figure-relative units, serves the others
    (a constrained layout costs as much as drawing the figure)."""
    base = Path(base)
    paths = []
    for fmt in formats:
        paths.append(save_figure(fig, base.with_name(f"{base.name}.{fmt}"), dpi=dpi))
        fig.set_layout_engine("none")
    return paths


def write_table(path, columns: dict[str, np.ndarray]) -> Path:
    """Write named 1-D columns as .npz or .csv, chosen by the file extension."""
    path, suffix = Path(path), _format(path, TABLE_FORMATS, "table")
    if suffix == "npz":
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in columns.items()})
        return atomic_write_bytes(path, buf.getvalue())
    names = list(columns)
    data = np.column_stack([np.asarray(columns[k], dtype=np.float64) for k in names])
    buf = io.StringIO()
    np.savetxt(buf, data, delimiter=",", header=",".join(names), comments="", fmt="%.17g")
    return atomic_write_text(path, buf.getvalue())

