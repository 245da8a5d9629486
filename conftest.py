"""Repository-level pytest configuration: doctests of flowlab/ are collected from here too.

flowlab/systems/markov/transformer.py imports PyTorch at module level (the only module that does); without the
``torch`` extra it is skipped instead of failing collection. CI installs the extra, so it runs there.
"""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("torch") else ["flowlab/systems/markov/transformer.py"]
