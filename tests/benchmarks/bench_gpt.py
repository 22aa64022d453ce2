"""Char-level GPT train step (forward, loss, VJP, AdamW update): fnn vs its torch.nn twin.

    python -m tests.benchmarks.run_all gpt

The model is examples/char_gpt.py's (4 layers, width 128, 4 heads, context 64, batch 16; CPU,
one thread; each MLP one fused `Mlp` layer; the row "fnn, MLP as serial(...)" runs it as
`serial(Dense, Gelu, Dense)`, which computes the same bits and keeps the Gelu's output too). Baselines: the same model in torch.nn + autograd + torch.optim.AdamW, called
as torch users usually do — `nn.MultiheadAttention(..., need_weights=False)` (its fused
flash path) — and with `need_weights=True` (torch's default, which keeps the T×T weights);
and torch.compile of the twin's step when it compiles. All interleaved in one process.
Memory: peak extra host memory of one step at context 64 and 512 (batch 16), and fnn.summary
of the model's body per layer. Budget: the validation loss of fnn and the twin after the
same number of steps (and their seconds).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import time

import torch

import fnn

from ._timing import compare, pin_threads, report

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAYERS, EMBED, HEADS, CONTEXT, BATCH = 4, 128, 4, 64, 16


def example():
    spec = importlib.util.spec_from_file_location(
        "char_gpt_bench", ROOT / "examples" / "char_gpt.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_fnn_step(gpt, corpus, context: int, batch: int, remat: str = "none", mlp: str = "fused"):
    vocab = len(corpus.chars)
    model = gpt.make_model(vocab, EMBED, HEADS, LAYERS, context, remat, mlp)
    params = gpt.init_params(model, context, fnn.random.key(0))
    x, y = gpt.batch(fnn.random.key(1), corpus.train, batch, context)
    loss_and_grads = fnn.value_and_grad(model.apply, gpt.sequence_cross_entropy)
    opt = fnn.optim.adamw(lr=3e-3)
    carry = [params, opt.init(params)]

    def step():
        value, grads = loss_and_grads(carry[0], x, y)
        carry[0], carry[1] = opt.update(carry[0], grads, carry[1])
        return value

    return step, params, model


def make_torch_step(gpt, corpus, params, context: int, batch: int, need_weights: bool = False):
    model = gpt.make_torch_model(len(corpus.chars), EMBED, HEADS, LAYERS, context)
    gpt.load_torch_model(model, params, LAYERS)
    if need_weights:  # torch's default call: the attention weights are computed and kept
        for module in model.modules():
            if isinstance(module, gpt.TorchCausalSelfAttention):
                module.forward = _with_weights.__get__(module)
    x, y = gpt.batch(fnn.random.key(1), corpus.train, batch, context)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def forward_backward():
        logits = model(x)
        value = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        )
        value.backward()
        return value

    def step():
        with torch.enable_grad():
            opt.zero_grad()
            value = forward_backward()
            opt.step()
        return value

    return step, model, opt, forward_backward


def _with_weights(self, x):
    length = x.shape[1]
    mask = torch.ones(length, length, dtype=torch.bool).triu(1)
    return torch.nn.MultiheadAttention.forward(self, x, x, x, attn_mask=mask, need_weights=True)[0]


def speed(gpt, corpus) -> dict[str, float]:
    fnn_step, params, _ = make_fnn_step(gpt, corpus, CONTEXT, BATCH)
    fnn_serial_step, _, _ = make_fnn_step(gpt, corpus, CONTEXT, BATCH, mlp="serial")
    fnn_mlp_step, _, _ = make_fnn_step(gpt, corpus, CONTEXT, BATCH, remat="mlp")
    torch_step, *_ = make_torch_step(gpt, corpus, params, CONTEXT, BATCH)
    torch_weights_step, *_ = make_torch_step(gpt, corpus, params, CONTEXT, BATCH, need_weights=True)
    cases = {
        "torch eager + autograd": torch_step,
        "torch, need_weights=True": torch_weights_step,
        "fnn": fnn_step,
        "fnn, MLP as serial(...)": fnn_serial_step,
        "fnn, remat MLP per block": fnn_mlp_step,
    }
    compile_note = ""
    try:
        _, _, opt, forward_backward = make_torch_step(gpt, corpus, params, CONTEXT, BATCH)
        compiled = torch.compile(forward_backward)

        def torch_compiled_step():
            with torch.enable_grad():
                opt.zero_grad()
                value = compiled()
                opt.step()
            return value

        start = time.perf_counter()
        for _ in range(2):
            torch_compiled_step()
        compile_note = f" (torch.compile took {time.perf_counter() - start:.0f} s)"
        cases["torch.compile(twin fwd+bwd)"] = torch_compiled_step
    except Exception as error:  # a benchmark reports what did not compile
        compile_note = f" (torch.compile failed: {type(error).__name__})"
    times = compare(cases, number=4, repeats=15, warmup=2)
    return report(
        f"char-GPT train step, {LAYERS} layers, width {EMBED}, {HEADS} heads, context {CONTEXT}, "
        f"batch {BATCH}, AdamW{compile_note}",
        times,
        baseline="torch eager + autograd",
    )


def memory(gpt, corpus, context: int) -> dict[str, int]:
    # imported here: it makes malloc serve every block ≥ 1 MiB by mmap (to count it exactly),
    # which slows every large allocation: the speed figures are taken before
    from ._memory import peak_extra_bytes

    fnn_step, params, _ = make_fnn_step(gpt, corpus, context, BATCH)
    fnn_serial_step, _, _ = make_fnn_step(gpt, corpus, context, BATCH, mlp="serial")
    fnn_mlp_step, _, _ = make_fnn_step(gpt, corpus, context, BATCH, remat="mlp")
    fnn_remat_step, _, _ = make_fnn_step(gpt, corpus, context, BATCH, remat="block")
    torch_step, _, torch_opt, _ = make_torch_step(gpt, corpus, params, context, BATCH)
    torch_weights_step, _, weights_opt, _ = make_torch_step(
        gpt, corpus, params, context, BATCH, need_weights=True
    )
    # Both measured from the same state: params and optimizer state, no gradients. torch keeps
    # its .grad tensors between steps (an fnn step drops its grads after the update), so
    # they are released first: otherwise zero_grad() frees them inside the measured step.
    results = {}
    for name, step, reset in [
        ("torch eager + autograd", torch_step, torch_opt.zero_grad),
        ("torch, need_weights=True", torch_weights_step, weights_opt.zero_grad),
        ("fnn", fnn_step, _nothing),
        ("fnn, MLP as serial(...)", fnn_serial_step, _nothing),
        ("fnn, remat MLP per block", fnn_mlp_step, _nothing),
        ("fnn, remat per block", fnn_remat_step, _nothing),
    ]:
        step()  # optimizer state allocated; then measure a step
        peaks = []
        for _ in range(2):
            reset()
            peaks.append(peak_extra_bytes(step))
        results[name] = min(peaks)
    base = results["torch eager + autograd"]
    print(f"\npeak extra memory of one train step, context {context}, batch {BATCH}")
    for name, value in results.items():
        print(f"  {name:<28} {value / 2**20:8.1f} MiB   {value / base:5.2f}× torch")
    return results


def _nothing() -> None:
    pass


def per_layer_summary(gpt, context: int) -> None:
    """fnn.summary of the body (embeddings excluded: summary feeds float inputs)."""
    for mlp in ("fused", "serial"):
        body = fnn.serial(gpt.block(EMBED, HEADS, mlp=mlp), fnn.layers.LayerNorm())
        print(
            f"\nfnn.summary of one block (mlp={mlp!r}) + LayerNorm, input (-1, {context}, {EMBED}):"
        )
        print(fnn.summary(body, (-1, context, EMBED)))


def budget(gpt, corpus, steps: int = 200) -> None:
    argv = [
        "--steps",
        str(steps),
        "--sample-length",
        "0",
        "--log-every",
        str(steps),
        "--compare-torch",
    ]
    args = gpt.parse_args(argv)
    run = gpt.train_fnn(args, corpus, log=None)
    initial = gpt.init_params(
        gpt.make_model(len(corpus.chars), EMBED, HEADS, LAYERS, CONTEXT),
        CONTEXT,
        fnn.random.split(fnn.random.key(0), 4)[0],
    )
    torch_run = gpt.train_torch(args, corpus, initial)
    gap = max(abs(a - b) for a, b in zip(run.step_losses[:200], torch_run.step_losses[:200]))
    print(f"\nfixed budget: {steps} steps of batch {BATCH}, context {CONTEXT}")
    print(
        f"  fnn   val loss {run.val_loss:.4f}  train loss {run.train_loss:.4f}  {run.seconds:6.1f} s"
    )
    print(
        f"  torch val loss {torch_run.val_loss:.4f}  train loss {torch_run.train_loss:.4f}  {torch_run.seconds:6.1f} s"
    )
    print(f"  max |loss_fnn − loss_torch| over the first {min(200, steps)} steps: {gap:.2e}")


def main(which: str = "all") -> None:
    pin_threads(1)
    gpt = example()
    corpus = gpt.load_corpus()
    if which in ("all", "speed"):
        speed(gpt, corpus)
    if which in ("all", "memory"):
        memory(gpt, corpus, CONTEXT)
        memory(gpt, corpus, 512)
        per_layer_summary(gpt, 512)
    if which in ("all", "budget"):
        budget(gpt, corpus)


if __name__ == "__main__":
    main(*sys.argv[1:])
