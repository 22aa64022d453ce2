"""Per-example gradients of the disk MLP 2→25→25→25→2: fnn.per_example_grads vs torch.func.

    python -m tests.benchmarks.run_all per_example

Baseline: `torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))` with `f` the loss of one
example (as a batch of one) of the matching torch.nn.functional model; fnn returns the
per-example losses as well. One thread; cross-entropy and MSE; batch 10, 100 and 1000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from ._timing import compare, pin_threads, report

BATCHES = (10, 100, 1000)
LOSSES = {
    "cross-entropy": (fnn.losses.cross_entropy, F.cross_entropy),
    "MSE": (fnn.losses.mse, F.mse_loss),
}


def torch_mlp(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for i in (0, 2, 4):
        x = F.relu(F.linear(x, p[f"{i}.weight"], p[f"{i}.bias"]))
    return F.linear(x, p["6.weight"], p["6.bias"])


def example_loss(loss, p, xn, tn):
    """One example's loss, as a batch of one (what torch.func.grad differentiates)."""
    return loss(torch_mlp(p, xn.unsqueeze(0)), tn.unsqueeze(0))


def cases(batch: int, loss_name: str):
    fnn_loss, torch_loss = LOSSES[loss_name]
    init, apply = fnn.serial(
        L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(25), L.Relu(), L.Dense(2)
    )
    _, params = init(fnn.random.key(0), (-1, 2))
    x, labels = fnn.data.disk(fnn.random.key(1), batch)
    target = labels if loss_name == "cross-entropy" else fnn.data.one_hot(labels, 2)
    flat = fnn.tree.to_state_dict(params)

    per_example = fnn.per_example_grads(apply, fnn_loss)
    torch_func = torch.func.vmap(
        torch.func.grad(lambda p, xn, tn: example_loss(torch_loss, p, xn, tn)), in_dims=(None, 0, 0)
    )

    def fnn_case():
        return per_example(params, x, target)

    def torch_case():
        return torch_func(flat, x, target)

    # the two agree before they are timed
    _, grads = fnn_case()
    expected = torch_case()
    for name, g in fnn.tree.to_state_dict(grads).items():
        torch.testing.assert_close(g, expected[name], atol=1e-5, rtol=1e-4)
    return {"torch.func vmap(grad)": torch_case, "fnn.per_example_grads": fnn_case}


def main() -> dict[str, float]:
    pin_threads(1)
    ratios = {}
    for loss_name in LOSSES:
        for batch in BATCHES:
            number = 20 if batch < 1000 else 5
            times = compare(cases(batch, loss_name), number=number, repeats=15)
            title = f"per-example gradients, disk MLP, {loss_name}, batch {batch}"
            r = report(title, times, baseline="torch.func vmap(grad)")
            ratios[f"{loss_name}, batch {batch}"] = r["fnn.per_example_grads"]
    print("\nsummary (fnn speed-up over torch.func vmap(grad)):")
    for case, ratio in ratios.items():
        print(f"  {case:<28} {ratio:6.2f}×")
    return ratios


if __name__ == "__main__":
    main()
