"""ntp_order benchmark: one full run of the quoted experiment (reconstruction, MODELS.md §7) and the
cost of one stage-2 gradient, vectorised vs a per-sentence Python loop baseline run in this process.

    python benchmarks/ntp_order.py [--vocab 20] [--sentences 200] [--seed 0] [--steps2 20000] [--repeat 200]

Prints one JSON object: wall and CPU seconds of the full run (targets + both stages + fits), the
time of one vectorised stage-2 loss+gradient, the same computed sentence by sentence with the
explicit formulas (the baseline), their ratio, and the full run expressed in baseline gradient
evaluations (a machine-independent size). The two gradients are compared (max abs difference).
"""

import argparse
import json
import time

import numpy as np


def _loop_gradient(W_ov, W_kq, sentences, labels):
    """The baseline: loss and dL/dW_kq sentence by sentence, X one-hot, no batching."""
    K = W_ov.shape[0]
    grad, loss = np.zeros_like(W_kq), 0.0
    for s, y in zip(sentences, labels):
        X = np.eye(K)[:, list(s)]
        a = X.T @ W_kq[:, s[-1]]
        phi = np.exp(a - a.max())
        phi /= phi.sum()
        z = W_ov @ X @ phi
        p = np.exp(z - z.max())
        p /= p.sum()
        loss -= np.log(p[y])
        g = (W_ov @ X).T @ (p - np.eye(K)[y])
        ds = phi * (g - phi @ g)
        grad[:, s[-1]] += X @ ds
    n = len(sentences)
    return loss / n, grad / n


def _per_call(fn, repeat):
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=20)
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps2", type=int, default=None, help="stage-2 iterations (default: the library's)")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)

    from flowlab.systems import ntp_order as no

    t = time.perf_counter()
    import cvxpy  # noqa: F401  (imported once here so that the run below times the work, not the import)

    out = {"vocab": args.vocab, "sentences": args.sentences, "seed": args.seed, "import_cvxpy_s": time.perf_counter() - t}
    data = no.generate(args.vocab, args.sentences, seed=args.seed)
    wall, cpu = time.perf_counter(), time.process_time()
    result = no.run_experiment(data, seed=args.seed, steps2=args.steps2)
    out["full_run_wall_s"] = time.perf_counter() - wall
    out["full_run_cpu_s"] = time.process_time() - cpu
    out["steps"] = [result.stage1.iterations, result.stage2.iterations]
    out["checks"] = result.checks

    rng = np.random.default_rng(0)
    W_ov, W_kq = result.run.stage1.W, rng.normal(size=(args.vocab, args.vocab))
    batch = no.make_batch(data.sentences, data.labels(), data.optima(), args.vocab)
    labels = list(data.labels())
    vec = _per_call(lambda: no.loss_and_grads(W_ov, W_kq, batch, need_ov=False), args.repeat)
    loop = _per_call(lambda: _loop_gradient(W_ov, W_kq, data.sentences, labels), max(1, args.repeat // 10))
    lv, _, gv = no.loss_and_grads(W_ov, W_kq, batch, need_ov=False)
    ll, gl = _loop_gradient(W_ov, W_kq, data.sentences, labels)
    out.update({
        "stage2_gradient_vectorised_us": vec * 1e6, "stage2_gradient_loop_us": loop * 1e6,
        "loop_over_vectorised": loop / vec, "full_run_in_loop_gradients": out["full_run_wall_s"] / loop,
        "max_abs_gradient_difference": float(np.max(np.abs(gv - gl))), "loss_difference": float(abs(lv - ll)),
    })
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
