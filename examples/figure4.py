"""The paper's Figure 4: at p = 0.5, q = 0.8 training from the standard Gaussian initialisation
ends at the unigram loss h(pi1) = 0.6663, training from the guideline initialisation (the point
`flowlab guide` recommends) reaches the bigram loss H = 0.6190.

Panels: (a) mini-batch SGD on the canonical model ewb (exact expected loss), (b) a real
single-layer transformer trained by SGD (validation loss; when PyTorch is installed), (c) the
low-rank check: the energy fraction of the top singular direction of W_V and of the first FFN
matrix W_1 over training (with extra transformer runs from the standard initialisation trained
by Adam). Mean +- std over 3 seeds. Also prints and saves (next to the figure, as JSON) the
summary and the agreement table: flow prediction vs where SGD on ewb ended, for a handful of
(p, q) and initialisations.

    python examples/figure4.py [--out figure4.png] [--fast] [--no-transformer]

``--fast`` (used by the tests) shortens every run and the table.
"""

import argparse
import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from flowlab.engine.io import atomic_write_text, save_figure, to_json
from flowlab.plots import markov as plots
from flowlab.systems.markov import sgd, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figure4.png", help="figure file (.png, .pdf or .svg)")
    parser.add_argument("--fast", action="store_true", help="short runs and a small table (for tests)")
    parser.add_argument("--no-transformer", action="store_true", help="skip the PyTorch transformer")
    parser.add_argument("--quiet", action="store_true", help="less output")
    args = parser.parse_args(argv)

    has_torch = importlib.util.find_spec("torch") is not None and not args.no_transformer
    exp = train.figure4(0.5, 0.8, seeds=(0, 1, 2), fast=args.fast, transformer=has_torch, quiet=args.quiet)
    s = exp["summary"]
    print(f"p = 0.5, q = 0.8: unigram loss h(pi1) = {s['levels']['unigram']:.4f}, bigram loss H = {s['optimal_loss']:.4f}")
    for kind in ("canonical", "transformer"):
        if not s.get(kind):
            continue
        for init, r in s[kind].items():
            print(f"  {kind:>11} {init:>9}: mean {r['mean']:.4f} +- {r['std']:.4f} over seeds {r['seeds']} "
                  f"({', '.join(f'{v:.4f}' for v in r['final_losses'])})")
    if s.get("transformer_adam"):
        r = s["transformer_adam"]
        frac = {m: ", ".join(f"{v:.3f}" for v in r["rank_one_fraction_final"][m]) for m in ("W_V", "W_1")}
        print(f"  transformer standard + Adam: mean {r['mean']:.4f} (rank-one fraction at the end: "
              f"W_V {frac['W_V']}; W_1 {frac['W_1']})")

    cases = None
    if args.fast:
        cases = [(p, q, init) for p, q in ((0.5, 0.8), (0.2, 0.3)) for init in train.TABLE_INITS]
    rows = train.agreement_table(cases, steps=800 if args.fast else sgd.DEFAULTS["steps"])
    print(train.table_text(rows), end="")

    n = 3 if exp["transformer"] else 1
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 4.3), layout="constrained", squeeze=False)
    plots.figure4_panels(exp, axes=axes[0])
    out = Path(args.out)
    save_figure(fig, out)
    plt.close(fig)
    atomic_write_text(out.with_suffix(".json"), to_json({"summary": s, "agreement_table": rows}))
    print("wrote", out, "and", out.with_suffix(".json"))
    return {"figure4": exp, "summary": s, "agreement_table": rows}


if __name__ == "__main__":
    main()
