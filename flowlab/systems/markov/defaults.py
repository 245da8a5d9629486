"""Names and defaults shared by the library and the command line, in one place.

This module imports nothing but the engine's defaults (which import nothing), so the CLI reads its
choices and defaults from here without importing NumPy, SymPy or torch on ``--help``; the library
modules take the same objects (``flowlab.systems.markov.models``, ``flowlab.engine.trajectory``,
``flowlab.systems.markov.train``, ``flowlab.systems.markov.transformer``), so there is no copy to
keep equal.
"""

#: Solver methods and budget of a flow (flowlab.engine.trajectory), re-exported from the engine's defaults.
from flowlab.engine.defaults import FLOW_BUDGET, FLOW_METHODS  # noqa: F401

#: Names of the preset models (flowlab.systems.markov.models.PRESETS), in this order: ew, ewb, ewa, ewab.
PRESET_NAMES = ("ew", "ewb", "ewa", "ewab")

#: Initialisations of the canonical model ``ewb`` (flowlab.systems.markov.train).
CANONICAL_INITS = ("standard", "guideline")
#: Defaults of flowlab.systems.markov.sgd.sgd_canonical (they reproduce the paper's Figure 4 at p = 0.5, q = 0.8).
CANONICAL_DEFAULTS = {"steps": 3000, "batch": 32, "seq_len": 64, "lr": 0.1, "momentum": 0.0, "log_every": 20}
#: Defaults of flowlab.systems.markov.guide.guide: a basin grid of ``ew`` on [-extent, extent]^2 with step 0.1.
GUIDE_DEFAULTS = {"grid": 61, "extent": 3.0, "margin": 0.5, "e_min": 0.5}

#: Initialisations and optimisers of the PyTorch transformer (flowlab.systems.markov.transformer).
TRANSFORMER_INITS = ("standard", "guideline", "rank-one")
OPTIMIZERS = ("sgd", "adam")
#: The transformer's standard initialisation: weights N(0, STANDARD_STD^2), biases 0.
STANDARD_STD = 0.02
#: Defaults of flowlab.systems.markov.transformer.train_transformer (the paper's Figure 4 at p = 0.5, q = 0.8).
TRANSFORMER_DEFAULTS = {
    "d": 8,
    "seq_len": 32,
    "steps": 1500,
    "batch": 32,
    "lr": 0.5,
    "momentum": 0.0,
    "optimizer": "sgd",
    "log_every": 25,
    "eval_sequences": 2**15,
    "val_sequences": 4096,
    "noise": STANDARD_STD,
    "layer_norm": False,
    "threads": 1,  # one intra-op thread: 10.9 s vs 84 s per run with 2 on a loaded 2-core machine (issue 17)
}

#: Up-front limits of training (flowlab.systems.markov.sgd.sgd_canonical, flowlab.systems.markov.transformer.train_transformer):
#: estimated memory (bytes) and time (seconds).
TRAINING_LIMITS = {"bytes": 4 * 2**30, "seconds": 3600.0}
#: Largest landscape sampling per axis and PNG dpi of flowlab plot. Measured: about 100 bytes per
#: landscape point (resolution 300 -> 1000: +93 MB) and 4 bytes per pixel of a 6.4 x 5.6 inch figure
#: (dpi 200 -> 800: +86 MB), so the limits cost about 0.4 GB and 0.2 GB.
PLOT_LIMITS = {"resolution": 2000, "dpi": 1200}
