"""An on-disk, content-addressed cache of compiled code, so that a second process does not re-derive.

What is stored: JSON only, never a pickle. An entry is one file ``KIND-KEY.json`` holding a JSON
payload, the key it was stored under and the SHA-256 of the payload's canonical JSON text. The key
is the SHA-256 of the caller's identity text (e.g. the ``srepr`` of a model's logit, its parameters
and bias mode), the entry format, flowlab's version, SymPy's version (read from the installed
metadata, without importing SymPy) and a digest of flowlab's own source files that shape the result
(so an edited checkout never reads an entry made by other code). Compiled functions are stored as
the source text that :func:`flowlab.symbolic.compile.compile_exprs` (``lambdify``) generated
(:func:`function_record`) and rebuilt by :func:`load_function`.

Trust model (what the cache assumes, and checks):

* The cache folder (``$FLOWLAB_CACHE_DIR``, else ``platformdirs.user_cache_dir("flowlab")``, created
  0700) belongs to the current user and nobody else can write to it: like ssh with its keys, the
  folder and every entry are used only when owned by the current user and not group- or
  world-writable (checked with ``fstat`` on the opened file, symbolic links not followed); else the
  cache is ignored (one line on stderr per process) and everything is derived afresh.
* An entry whose JSON does not parse, whose key or kind differs from its name, or whose SHA-256
  does not match its payload (truncated, corrupt, foreign) is ignored and rebuilt, with no error.
* Defence in depth against a tampered entry: stored code is loaded only after its syntax tree passes
  a whitelist (one function of plain positional arguments made of assignments, arithmetic,
  comparisons, numeric constants, lists, and calls of whitelisted names: NumPy ufuncs, ``select``,
  ``where``, ``amax``, ``amin``, ``reduce``, float constants and the special functions'
  NumPy twins); no attribute access, no dunder name, no builtins. It runs in a namespace holding
  exactly those names. Such code can only compute numbers (an absurd power could still be slow).
  Code that would not pass is never stored (the process keeps its freshly compiled function).

Writes are atomic (:func:`flowlab.engine.io.atomic_write_bytes`, mode 0600): concurrent processes
storing the same entry each rename a complete file over it. ``--no-cache`` (``set_enabled(False)``)
or ``FLOWLAB_NO_CACHE=1`` turn the cache off for reading and writing. Only NumPy and the standard
library are needed to read an entry: a warm ``flowlab eval`` imports no SymPy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from functools import cache
from pathlib import Path

#: Version of the entry layout (part of every key).
FORMAT = 1
#: Environment variables: the cache folder, and 1 to turn the cache off.
ENV_DIR = "FLOWLAB_CACHE_DIR"
ENV_OFF = "FLOWLAB_NO_CACHE"
#: Entries larger than this are not read.
MAX_ENTRY_BYTES = 16 * 2**20
#: The name of an entry file: KIND-KEY.json (KIND lower-case letters and dashes, KEY 64 hex digits).
ENTRY_NAME = re.compile(r"^([a-z][a-z-]*)-([0-9a-f]{64})\.json$")

_state = {"enabled": True, "warned": False}


def set_enabled(flag: bool) -> None:
    """Turn the cache on or off for this process (``flowlab --no-cache``)."""
    _state["enabled"] = bool(flag)


def enabled() -> bool:
    return _state["enabled"] and os.environ.get(ENV_OFF, "") in ("", "0")


def cache_dir() -> Path:
    """The cache folder: ``$FLOWLAB_CACHE_DIR`` when set, else the user cache folder of ``platformdirs``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("flowlab"))


@cache
def sympy_version() -> str:
    """The installed SymPy's version, read from ``sympy/release.py`` without importing SymPy (or, failing that,
    from its metadata: ``importlib.metadata`` alone takes 0.1-0.2 s to import)."""
    import importlib.util

    spec = importlib.util.find_spec("sympy")
    if spec is None or not spec.origin:
        return "none"
    try:
        text = (Path(spec.origin).parent / "release.py").read_text(encoding="utf-8")
        return re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M).group(1)
    except (OSError, AttributeError):
        from importlib.metadata import version

        return version("sympy")


@cache
def source_digest(folders: tuple[str, ...]) -> str:
    """SHA-256 over the ``*.py`` files (names and contents) of ``folders`` and of flowlab/symbolic."""
    h = hashlib.sha256()
    for folder in sorted({str(Path(__file__).parent), *folders}):
        for path in sorted(Path(folder).glob("*.py")):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def entry_key(kind: str, identity: str, sources: tuple[str, ...] = ()) -> str:
    """The content key of an entry: SHA-256 of the identity, the format and the versions of the code."""
    import flowlab

    text = json.dumps({"kind": kind, "identity": identity, "format": FORMAT, "flowlab": flowlab.__version__,
                       "sympy": sympy_version(), "source": source_digest(tuple(sources))}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _private(st) -> bool:
    """Owned by the current user and not writable by group or others (POSIX; elsewhere: True)."""
    if not hasattr(os, "getuid"):
        return True
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def trusted_dir(root: Path) -> bool:
    """True when ``root`` is a folder (not a link) owned by the current user and writable by no one else."""
    try:
        st = os.lstat(root)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _private(st)


def _refuse(root: Path) -> None:
    """Say once per process why the cache folder is ignored."""
    if not _state["warned"]:
        _state["warned"] = True
        print(f"flowlab: ignoring the cache folder {root}: it must be a folder owned by you and writable by no one "
              f"else (chmod go-w); deriving afresh", file=sys.stderr)


def _read(path: Path) -> bytes | None:
    """The bytes of an entry file, if it is a private regular file (checked on the opened file)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or not _private(st) or st.st_size > MAX_ENTRY_BYTES:
            return None
        try:
            return fh.read(MAX_ENTRY_BYTES + 1)
        except OSError:
            return None


def _reject_constant(name):
    raise ValueError(name)


def get(kind: str, identity: str, sources: tuple[str, ...] = ()):
    """The payload stored for (kind, identity), or None (cache off, no entry, untrusted or damaged entry)."""
    if not enabled():
        return None
    root = cache_dir()
    if not root.exists():
        return None
    if not trusted_dir(root):
        _refuse(root)
        return None
    key = entry_key(kind, identity, sources)
    data = _read(root / f"{kind}-{key}.json")
    if data is None:
        return None
    try:
        entry = json.loads(data, parse_constant=_reject_constant)
        ok = (isinstance(entry, dict) and entry.get("format") == FORMAT and entry.get("kind") == kind
              and entry.get("key") == key and entry.get("sha256") == _digest(entry.get("payload")))
    except (ValueError, TypeError, RecursionError):
        return None
    return entry["payload"] if ok else None


def put(kind: str, identity: str, payload, sources: tuple[str, ...] = ()) -> bool:
    """Store ``payload`` (JSON data) for (kind, identity) atomically; False when the cache is off or unusable."""
    if not enabled():
        return False
    from flowlab.engine.io import atomic_write_bytes

    root = cache_dir()
    key = entry_key(kind, identity, sources)
    entry = {"format": FORMAT, "kind": kind, "key": key, "payload": payload, "sha256": _digest(payload)}
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not trusted_dir(root):
            _refuse(root)
            return False
        atomic_write_bytes(root / f"{kind}-{key}.json", json.dumps(entry, sort_keys=True).encode(), mode=0o600)
    except (OSError, ValueError):  # a read-only or full disk: the cache is only a shortcut
        return False
    return True


def _entries(root: Path) -> list[Path]:
    """The entry files in ``root`` (nothing else in the folder is ever touched)."""
    try:
        return sorted(p for p in root.iterdir() if ENTRY_NAME.match(p.name) and p.is_file())
    except OSError:
        return []


def info() -> dict:
    """The cache folder, whether it is used, and its entries (JSON-ready)."""
    root = cache_dir()
    entries = _entries(root) if root.exists() else []
    sizes = [p.stat().st_size for p in entries]
    usable = not root.exists() or trusted_dir(root)
    state = "on" if enabled() else "off (--no-cache or FLOWLAB_NO_CACHE=1)"
    return {
        "status": "ok" if usable else "untrusted",
        "message": f"cache {state}: {len(entries)} entries, {sum(sizes)} bytes in {root}"
        + ("" if usable else "; the folder is ignored: it must be owned by you and writable by no one else"),
        "directory": str(root),
        "enabled": enabled(),
        "trusted": usable,
        "entries": len(entries),
        "bytes": sum(sizes),
        "kinds": {k: sum(ENTRY_NAME.match(p.name).group(1) == k for p in entries)
                  for k in sorted({ENTRY_NAME.match(p.name).group(1) for p in entries})},
    }


def clear() -> int:
    """Remove every entry file (and left-over temporary files of interrupted writes); the number removed."""
    root = cache_dir()
    if not root.exists():
        return 0
    removed = 0
    leftovers = [p for p in root.glob(".*.json.*.tmp") if ENTRY_NAME.match(p.name[1:].split(".json.")[0] + ".json")]
    for path in _entries(root) + leftovers:
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    return removed


# ----------------------------------------------------------------------------- compiled code


@cache
def _nodes() -> tuple:
    """The syntax allowed in stored code (see the module docstring); ``ast`` is imported only when code is loaded."""
    import ast

    return (ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Assign, ast.Return, ast.Name, ast.Load,
            ast.Store, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Call, ast.keyword, ast.List, ast.Tuple,
            ast.Compare, ast.BoolOp, ast.IfExp, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)

#: NumPy functions (beyond ufuncs and float constants) that stored code may call.
_NUMPY_FUNCTIONS = ("select", "where", "amax", "amin")


def _safe_object(name: str):
    """The object a global name of stored code stands for, or None when the name is not allowed."""
    import numpy as np

    from flowlab.symbolic.twins import NUMPY_IMPLEMENTATIONS

    if name in NUMPY_IMPLEMENTATIONS:
        return NUMPY_IMPLEMENTATIONS[name]
    if name == "reduce":
        from functools import reduce

        return reduce
    obj = getattr(np, name, None)
    if isinstance(obj, (np.ufunc, float)) or (name in _NUMPY_FUNCTIONS and obj is not None):
        return obj
    return None


def check_source(source: str) -> tuple[str, dict]:
    """(function name, namespace) of generated code that passes the whitelist; ValueError otherwise."""
    import ast

    tree = ast.parse(source)
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        raise ValueError("stored code must be one function")
    fn = tree.body[0]
    a = fn.args
    if fn.decorator_list or fn.returns or a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs:
        raise ValueError("stored code must take plain positional arguments")
    local = {arg.arg for arg in a.args}
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, _nodes()):
            raise ValueError(f"{type(node).__name__} is not allowed in stored code")
        if isinstance(node, ast.Constant) and type(node.value) not in (int, float, bool):
            raise ValueError("stored code may hold numeric constants only")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise ValueError("stored code may call names only")
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise ValueError("dunder names are not allowed in stored code")
            (local.add if isinstance(node.ctx, ast.Store) else names.add)(node.id)
    namespace = {"__builtins__": {}}
    for name in sorted(names - local):
        obj = _safe_object(name)
        if obj is None:
            raise ValueError(f"stored code uses the name {name!r}, which is not whitelisted")
        namespace[name] = obj
    return fn.name, namespace


def function_record(fn) -> dict | None:
    """The JSON record of a function made by ``compile_exprs``: its generated source, when that source passes
    :func:`check_source` and each global name it uses resolves to the very object it used (so the loaded
    function computes bit for bit the same); None otherwise."""
    import builtins
    import linecache

    source = "".join(linecache.getlines(fn.__code__.co_filename))
    try:
        name, namespace = check_source(source)
    except (SyntaxError, ValueError):
        return None
    if name != fn.__name__:
        return None
    for key, obj in namespace.items():
        if key != "__builtins__" and fn.__globals__.get(key, getattr(builtins, key, None)) is not obj:
            return None
    return {"source": source}


def load_function(record):
    """The function of a record made by :func:`function_record` (checked again); ValueError when it does not pass."""
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        raise ValueError("malformed function record")
    try:
        name, namespace = check_source(record["source"])
    except SyntaxError as exc:
        raise ValueError(f"stored code does not parse: {exc}") from None
    import hashlib
    import linecache

    source = record["source"]
    filename = f"<flowlab-cache {name} {hashlib.sha256(source.encode()).hexdigest()}>"  # one per source text
    # Registered like lambdify registers its code, so function_record can store a loaded function again (under
    # another key: the command-line spec of a model first compiled through the Python API).
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # whitelisted code only
    return namespace[name]
