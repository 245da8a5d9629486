"""Repository-level pytest configuration: doctests of flowlab/ are collected from here too.

flowlab/systems/markov/transformer.py imports PyTorch at module level (the only module that does); without the
``torch`` extra it is skipped instead of failing collection. CI installs the extra, so it runs there.
The on-disk cache of compiled models is a temporary folder of the session (FLOWLAB_CACHE_DIR).
"""

import importlib.util
import os
import shutil
import tempfile

collect_ignore = [] if importlib.util.find_spec("torch") else ["flowlab/systems/markov/transformer.py"]

#: The tests never touch the user's cache of compiled models: one private folder for the session (subprocesses
#: inherit it), removed at the end.
_CACHE_DIR = tempfile.mkdtemp(prefix="flowlab-test-cache-")
os.environ["FLOWLAB_CACHE_DIR"] = _CACHE_DIR


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
