"""The ``flowlab cache`` commands: where the on-disk cache of compiled models is, and clearing it.

The cache itself is :mod:`flowlab.symbolic.cache`; ``flowlab --no-cache COMMAND`` (or ``FLOWLAB_NO_CACHE=1``)
runs a command without reading or writing it.
"""

from __future__ import annotations

from flowlab.cli.args import HelpFormatter, write_output


def cmd_cache(args) -> int:
    from flowlab.engine.io import to_json
    from flowlab.symbolic import cache

    if args.action == "clear":
        removed = cache.clear()
        result = {**cache.info(), "removed": removed}
        result["message"] = f"removed {removed} entries from {result['directory']}; " + result["message"]
    else:
        result = cache.info()
    if args.json:
        write_output(to_json(result), None)
    else:
        print(result["message"])
    return 0


def add_parsers(sub) -> None:
    """Register ``cache info`` and ``cache clear`` on the flowlab subparsers ``sub``."""
    p = sub.add_parser("cache", formatter_class=HelpFormatter, help="the on-disk cache of compiled models: info, clear",
                       description="The on-disk cache of compiled models (so that a second process does not "
                       "re-derive): its folder ($FLOWLAB_CACHE_DIR, else the user cache folder), entries and size "
                       "(info), or remove every entry (clear). `flowlab --no-cache COMMAND` or FLOWLAB_NO_CACHE=1 "
                       "runs a command without it.")
    p.add_argument("action", choices=("info", "clear"), help="info: folder, entries, size; clear: remove every entry")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_cache)
