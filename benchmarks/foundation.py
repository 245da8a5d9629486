"""Foundation benchmark: start-up, derivation/compile time and evaluation rate.

    python benchmarks/foundation.py [--points 1000000] [--model ew]

Prints one JSON object. Times are wall-clock on this machine; the ratios compare against
baselines run in the same process (a bare interpreter start; a per-point Python loop over the
same compiled function), so they travel between machines better than the absolute numbers.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def _median_run(cmd, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--model", default="ew")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    out = {"model": args.model, "points": args.points}
    bare = _median_run([sys.executable, "-c", "pass"], args.repeat)
    help_time = _median_run([sys.executable, "-m", "flowlab.cli.app", "--help"], args.repeat)
    out["help_start_s"] = help_time
    out["bare_python_start_s"] = bare
    out["help_over_bare_python"] = help_time / bare

    t = time.perf_counter()
    import sympy  # noqa: F401

    import flowlab
    from flowlab.systems.markov.derivation import Derivation, gap_identities
    from flowlab.systems.markov.numeric import compile_model

    out["import_sympy_flowlab_s"] = time.perf_counter() - t
    model = flowlab.get_model(args.model)
    t = time.perf_counter()
    d = Derivation(model)
    _ = d.loss, d.gradient, d.hessian
    out["derive_loss_gradient_hessian_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ids = gap_identities() + d.identities[len(gap_identities()):]
    out["prove_identities_s"] = time.perf_counter() - t
    out["identities_verified"] = f"{sum(i.verified for i in ids)}/{len(ids)}"
    compile_model.cache_clear()
    t = time.perf_counter()
    compiled = compile_model(model)
    out["compile_s"] = time.perf_counter() - t

    chain = flowlab.MarkovChain(0.5, 0.8)
    nm = flowlab.NumericModel(model, chain)
    theta = np.random.default_rng(0).uniform(-3, 3, size=(args.points, len(model.params)))
    for what in ("loss", "gradient"):
        fn = getattr(nm, what)
        fn(theta[:1000])  # warm-up
        t = time.perf_counter()
        fn(theta)
        dt = time.perf_counter() - t
        out[f"{what}_points_per_s"] = args.points / dt
        raw = getattr(compiled, what)
        n_loop = 2000
        t = time.perf_counter()
        for row in theta[:n_loop]:
            raw(*row, chain.p, chain.q)
        loop_rate = n_loop / (time.perf_counter() - t)
        out[f"{what}_loop_points_per_s"] = loop_rate
        out[f"{what}_vectorised_over_loop"] = out[f"{what}_points_per_s"] / loop_rate
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
