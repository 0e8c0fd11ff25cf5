"""A small training step compiled with torch.compile: anyloss's loss against torch's.

    python benchmarks/bench_compile.py [--repeat 20] [--only mse_loss,cross_entropy,...]

For each loss, the step is a linear layer (64 -> 64, float32) on a batch of 256, the
loss of its output, and ``backward()``; the layer and the loss are compiled with
``torch.compile(..., fullgraph=True)`` (Inductor, the default backend; where one side
does not trace as one graph it is compiled with graph breaks, and the row says so), once with
``torch.nn.functional.<loss>`` and once with ``anyloss.<loss>``. The inputs the loss
takes besides the layer's output (targets, variances, the second and third embeddings)
are fixed tensors of the catalogue's kinds. Each round times both compiled steps once, in
turn; the medians, the ratio (torch time / anyloss time: above 1, anyloss's step is
faster; the goal is at least 0.95) and the memory floor (one read pass of the batch,
``x.max()``, timed in the same rounds) are printed after the machine line. Compile time is
not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from _machine import machine_line

import anyloss

N, D = 256, 64


def _problems():
    """loss -> (function of the layer output, extra tensors, options)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    classes = torch.randint(0, D, (N,), generator=g)
    sign = torch.where(u(N) < 0.5, -1.0, 1.0)
    multilabel = torch.full((N, D), -1, dtype=torch.int64)
    multilabel[:, :3] = torch.randint(0, D, (N, 3), generator=g)
    return {
        "l1_loss": (r(N, D),), "mse_loss": (r(N, D),), "huber_loss": (r(N, D),),
        "smooth_l1_loss": (r(N, D),), "soft_margin_loss": (torch.where(u(N, D) < .5, -1., 1.),),
        "nll_loss": (classes,), "cross_entropy": (classes,),
        "binary_cross_entropy_with_logits": (u(N, D),),
        "multilabel_soft_margin_loss": ((u(N, D) < 0.1).float(),),
        "multi_margin_loss": (classes,), "multilabel_margin_loss": (multilabel,),
        "hinge_embedding_loss": (torch.where(u(N, D) < .5, -1., 1.),),
        "kl_div": (F.log_softmax(r(N, D), 1),), "poisson_nll_loss": (u(N, D) * 3,),
        "gaussian_nll_loss": (r(N, D), u(N, D) + 0.1),
        "cosine_embedding_loss": (r(N, D), sign),
        "margin_ranking_loss": (r(N, D), torch.ones(N, D)),
        "triplet_margin_loss": (r(N, D), r(N, D)),
        "triplet_margin_with_distance_loss": (r(N, D), r(N, D)),
        "binary_cross_entropy": (u(N, D),),  # of sigmoid(layer output)
    }


def _step(loss_fn, layer, x, extra, fullgraph=True):
    """One training step: the layer and the loss compiled whole (``backward()`` itself is a
    graph break for torch.compile, so it runs on the compiled forward's output)."""
    def forward(x):
        out = layer(x)
        if loss_fn.__name__ == "nll_loss":
            out = F.log_softmax(out, 1)
        elif loss_fn.__name__ == "binary_cross_entropy":
            out = torch.sigmoid(out)
        return loss_fn(out, *extra)

    compiled = torch.compile(forward, fullgraph=fullgraph)

    def step():
        layer.zero_grad(set_to_none=True)
        compiled(x).backward()
    return step


def _compiled_step(fn, x, extra):
    """The step compiled whole, or (where the loss does not trace as one graph, as torch's
    ``gaussian_nll_loss`` with its host check of the variances) with graph breaks; the
    second value says which."""
    try:
        step = _step(fn, torch.nn.Linear(D, D), x, extra)
        step()  # compile
        return step, True
    except torch._dynamo.exc.Unsupported:
        pass
    except torch._dynamo.exc.UserError:
        pass
    torch._dynamo.reset()
    step = _step(fn, torch.nn.Linear(D, D), x, extra, fullgraph=False)
    step()
    return step, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated losses")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    # every loss's step shares one code object: one compiled entry per loss and library
    torch._dynamo.config.recompile_limit = 1000
    torch._dynamo.config.accumulated_recompile_limit = 1000
    print(machine_line())
    problems = _problems()
    chosen = [n for n in args.only.split(",") if n] or list(problems)
    x = torch.randn(N, D)
    print(f"step: Linear({D}, {D}) on {N}x{D} float32, loss, backward; "
          f"median of {args.repeat} rounds")
    print(f"{'loss':36s} {'torch ms':>9s} {'anyloss ms':>10s} {'ratio':>6s} {'x floor':>8s}")
    for name in chosen:
        extra = problems[name]
        steps, whole = {}, {}
        for who, fn in (("torch", getattr(F, name)), ("anyloss", getattr(anyloss, name))):
            steps[who], whole[who] = _compiled_step(fn, x, extra)
        times = {"torch": [], "anyloss": [], "floor": []}
        for _ in range(args.repeat):
            for who in ("torch", "anyloss"):
                start = time.perf_counter()
                steps[who]()
                times[who].append(time.perf_counter() - start)
            start = time.perf_counter()
            x.max()
            times["floor"].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name:36s} {med['torch'] * 1e3:9.3f} {med['anyloss'] * 1e3:10.3f} "
              f"{med['torch'] / med['anyloss']:6.2f} {med['anyloss'] / med['floor']:8.0f}"
              + "".join(f"  ({who}: graph breaks, not fullgraph)"
                        for who in ("torch", "anyloss") if not whole[who]))


if __name__ == "__main__":
    main()
