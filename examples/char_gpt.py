"""A character-level GPT trained with fnn on Python's own language reference.

    python examples/char_gpt.py                        # the default recipe, seed 0
    python examples/char_gpt.py --compare-torch        # the same run in torch.nn + autograd
    python examples/char_gpt.py --compare-torch --plot out/   # both loss curves (PNG)
    python examples/char_gpt.py --steps 200 --dtype float64 --compare-torch

Data: the text of `pydoc_data.topics` (ships with every Python: ~465 KB, ~100 distinct
characters), topics in sorted order joined by blank lines; the first 90 % of the characters
train, the last 10 % validate (a fixed split). Batches are random windows of `--context`
characters drawn from fnn.random keys, the same for fnn and torch.

Model (GPT-2's layout, pre-LayerNorm): token embedding + learned position embedding →
`--layers` blocks of `x + attention(LayerNorm(x))` (causal, `--heads` heads) and
`x + Dense(Gelu(Dense(LayerNorm(x))))` (width 4·E; one fused `Mlp` layer, which recomputes
the Gelu in the backward instead of keeping its output) → LayerNorm → a head tied to the
token embedding (`fnn.tie`: one weight, the gradient of both uses summed). Embeddings start at
N(0, 0.02²) as in GPT-2. Loss: cross-entropy of each next character; AdamW (lr 3e-3,
weight decay 0.01, torch's defaults otherwise).

`--compare-torch` builds the same model in torch.nn (nn.Embedding, nn.MultiheadAttention,
nn.LayerNorm, nn.Linear, nn.GELU, nn.Linear with `head.weight = tok.weight`) from the same
initial weights,
trains it with autograd and torch.optim.AdamW on the same batches, and prints the largest
gap between the two loss curves over the first 200 steps.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

import fnn
from fnn import layers as L

# ---------------------------------------------------------------------------------------
# Data


def load_text() -> str:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[name] for name in sorted(topics))


@dataclass
class Corpus:
    chars: list[str]
    train: torch.Tensor  # int64 (n_train,)
    val: torch.Tensor  # int64 (n_val,)

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.chars[i] for i in ids.tolist())


def load_corpus(val_fraction: float = 0.1) -> Corpus:
    text = load_text()
    chars = sorted(set(text))
    data = Corpus(chars, torch.empty(0), torch.empty(0))
    ids = data.encode(text)
    split = int(len(ids) * (1 - val_fraction))
    return Corpus(chars, ids[:split], ids[split:])


def batch(key: fnn.Key, ids: torch.Tensor, size: int, context: int):
    """`(x, y)`, both int64 (size, context): random windows and the next character of each."""
    starts = fnn.random.randint(key, (size,), 0, len(ids) - context - 1)
    rows = starts.unsqueeze(1) + torch.arange(context + 1)
    windows = ids[rows]
    return windows[:, :-1], windows[:, 1:]


# ---------------------------------------------------------------------------------------
# The model in fnn


def PositionEmbedding(max_length: int) -> fnn.Layer:
    """`y = x + W[:T]` on (N, T, E): a learned position embedding, params {"weight": (max_length, E)}."""

    def init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        embed = input_shape[-1]
        weight = fnn.random.normal(key, (max_length, embed), dtype=dtype, device=device)
        return input_shape, {"weight": weight}

    def apply(params, x, **kwargs):
        length = x.shape[1]
        return x + params["weight"][:length], fnn.VJP(position_backward, (length, max_length))

    return fnn.Layer(init, apply)


def position_backward(residuals, dy):  # y = x + W[:T]   ⇒   dW[:T] = Σₙ dy,  dx = dy
    length, max_length = residuals
    dweight = dy.new_zeros(max_length, dy.shape[-1])
    dweight[:length] = dy.sum(0)
    return {"weight": dweight}, dy


def residual(layer: fnn.Layer) -> fnn.Layer:
    """`x + layer(x)`: the layer's params nest under "1.0"."""
    return fnn.serial(L.FanOut(2), fnn.parallel(layer, L.Identity()), L.FanInSum())


def block(embed: int, heads: int, remat: str = "none", mlp: str = "fused") -> fnn.Layer:
    """A pre-LayerNorm block. Its MLP branch is `LayerNorm, Mlp(4E)` (`mlp="fused"`: it keeps
    6 E numbers per token, the Gelu recomputed in the backward) or `LayerNorm, Dense(4E),
    Gelu, Dense(E)` (`mlp="serial"`, the same numbers: it also keeps the Gelu's output, 10 E).
    `remat="mlp"` recomputes the MLP branch in the backward (it then keeps its input only, E),
    `"block"` the whole block."""
    attention = fnn.serial(L.LayerNorm(), L.MultiHeadAttention(heads, causal=True))
    if mlp == "fused":
        branch = fnn.serial(L.LayerNorm(), L.Mlp(4 * embed))
    else:
        branch = fnn.serial(L.LayerNorm(), L.Dense(4 * embed), L.Gelu(), L.Dense(embed))
    layer = fnn.serial(
        residual(attention), residual(fnn.remat(branch) if remat == "mlp" else branch)
    )
    return fnn.remat(layer) if remat == "block" else layer


def make_model(
    vocab: int, embed: int, heads: int, layers: int, context: int, remat="none", mlp="fused"
):
    """The GPT as one fnn layer on int64 (N, T) indices, giving (N, T, vocab) logits."""
    model = fnn.serial(
        L.Embedding(vocab, embed),
        PositionEmbedding(context),
        *[block(embed, heads, remat, mlp) for _ in range(layers)],
        L.LayerNorm(),
        L.Dense(vocab, bias=False),
    )
    return fnn.tie(model, {f"{layers + 3}.weight": "0.weight"})


def init_params(model: fnn.Layer, context: int, key: fnn.Key, dtype=torch.float32):
    _, params = model.init(key, (-1, context), dtype=dtype)
    # GPT-2's init for the embeddings: N(0, 0.02²)
    for name, sub in zip(("0", "1"), fnn.random.split(fnn.random.fold_in(key, 1))):
        weight = params[name]["weight"]
        params[name] = {"weight": 0.02 * fnn.random.normal(sub, weight.shape, dtype=dtype)}
    return params


def sequence_cross_entropy(logits: torch.Tensor, targets: torch.Tensor):
    """Cross-entropy over (N, T, C) logits and (N, T) targets, the mean over all N·T."""
    value, vjp = fnn.losses.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return value, fnn.VJP(sequence_cross_entropy_backward, (vjp, logits.shape))


def sequence_cross_entropy_backward(residuals, dvalue):  # reshape back: dlogits (N, T, C)
    vjp, shape = residuals
    return vjp(dvalue).view(shape)


# ---------------------------------------------------------------------------------------
# The same model in torch.nn (state_dict names are fnn's params' names)


class TorchPositionEmbedding(torch.nn.Module):
    def __init__(self, max_length: int, embed: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(max_length, embed))

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class TorchResidual(torch.nn.Module):
    """x + f(x), its layers named "1.0.<i>" as in fnn's FanOut/parallel/FanInSum residual."""

    def __init__(self, *layers: torch.nn.Module):
        super().__init__()
        self.add_module("1", torch.nn.Sequential(torch.nn.Sequential(*layers)))

    def forward(self, x):
        return x + self._modules["1"][0](x)


class TorchCausalSelfAttention(torch.nn.MultiheadAttention):
    def __init__(self, embed: int, heads: int):
        super().__init__(embed, heads, batch_first=True)

    def forward(self, x):
        length = x.shape[1]
        mask = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        return super().forward(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]


def make_torch_model(vocab: int, embed: int, heads: int, layers: int, context: int):
    nn = torch.nn
    blocks = [
        nn.Sequential(
            TorchResidual(nn.LayerNorm(embed), TorchCausalSelfAttention(embed, heads)),
            TorchResidual(
                nn.LayerNorm(embed),
                nn.Linear(embed, 4 * embed),
                nn.GELU(),
                nn.Linear(4 * embed, embed),
            ),
        )
        for _ in range(layers)
    ]
    model = nn.Sequential(
        nn.Embedding(vocab, embed),
        TorchPositionEmbedding(context, embed),
        *blocks,
        nn.LayerNorm(embed),
        nn.Linear(embed, vocab, bias=False),
    )
    model[-1].weight = model[0].weight  # tied: one Parameter, autograd sums both uses
    return model


def twin_name(name: str) -> str:
    """The torch twin's name of an fnn param: a block's fused `Mlp` ("<b>.1.1.0.1.0.weight",
    "<b>.1.1.0.1.2.weight") stands for the twin's Linear, GELU, Linear ("<b>.1.1.0.1.weight",
    "<b>.1.1.0.3.weight"); every other name is the twin's."""
    match = re.fullmatch(r"(\d+\.1\.1\.0)\.1\.([02])\.(weight|bias)", name)
    if match is None:
        return name
    branch, index, leaf = match.groups()
    return f"{branch}.{1 + int(index)}.{leaf}"


def load_torch_model(model: torch.nn.Module, params, layers: int) -> None:
    state = {twin_name(k): v for k, v in fnn.tree.to_state_dict(params).items()}
    state[f"{layers + 3}.weight"] = state["0.weight"]  # torch's state_dict lists the tied one twice
    model.load_state_dict({k: v.clone() for k, v in state.items()})


# ---------------------------------------------------------------------------------------
# Training


@dataclass
class Run:
    params: Any = None
    step_losses: list[float] = field(default_factory=list)
    val_loss: float = math.nan
    train_loss: float = math.nan
    seconds: float = 0.0
    tokens_per_second: float = 0.0
    sample: str = ""
    torch_gap: float | None = None  # max |loss_fnn − loss_torch| over the first 200 steps


class Progress:
    """A one-line progress bar with loss and tokens/s (redrawn in place on a terminal)."""

    def __init__(self, total: int, every: int, stream=None):
        self.total, self.every, self.stream = total, every, stream or sys.stdout
        self.live = getattr(stream, "isatty", lambda: False)()

    def update(self, step: int, loss: float, tokens_per_second: float) -> None:
        done = step / self.total
        bar = "█" * int(24 * done) + "·" * (24 - int(24 * done))
        line = f"step {step:5d}/{self.total} {bar} loss {loss:.4f}  {tokens_per_second / 1e3:6.1f}k tok/s"
        if self.live:
            print("\r" + line, end="" if step < self.total else "\n", file=self.stream, flush=True)
        elif step % self.every == 0 or step == self.total:
            print(line, file=self.stream)


def dtype_of(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def evaluate(loss_fn, ids: torch.Tensor, args, key: fnn.Key) -> float:
    """Mean loss over `--eval-batches` fixed batches of `ids` (the same windows every time)."""
    losses = [
        float(loss_fn(*batch(k, ids, args.batch_size, args.context)))
        for k in fnn.random.split(key, args.eval_batches)
    ]
    return sum(losses) / len(losses)


def sample(apply, params, corpus: Corpus, args, key: fnn.Key, length: int = 300) -> str:
    """Text drawn from the model, one character at a time (temperature 0.8), from a newline."""
    ids = corpus.encode("\n")
    for k in fnn.random.split(key, length):
        window = ids[-args.context :].unsqueeze(0)
        logits, _ = apply(params, window)
        probs = torch.softmax(logits[0, -1].double() / 0.8, -1)
        u = fnn.random.uniform(k, (1,), dtype=torch.float64)
        next_id = torch.searchsorted(probs.cumsum(0), u).clamp_(max=len(probs) - 1)
        ids = torch.cat([ids, next_id])
    return corpus.decode(ids[1:])


def train_fnn(args, corpus: Corpus, log=print) -> Run:
    dtype = dtype_of(args.dtype)
    vocab = len(corpus.chars)
    init_key, data_key, eval_key, sample_key = fnn.random.split(fnn.random.key(args.seed), 4)
    model = make_model(
        vocab, args.embed, args.heads, args.layers, args.context, args.remat, args.mlp
    )
    params = init_params(model, args.context, init_key, dtype)
    run = Run(params=params)
    opt = fnn.optim.adamw(lr=args.lr, weight_decay=args.weight_decay)
    opt_state = opt.init(params)
    loss_and_grads = fnn.value_and_grad(model.apply, sequence_cross_entropy)
    progress = Progress(args.steps, args.log_every) if log else None

    start = time.perf_counter()
    for step, key in enumerate(fnn.random.split(data_key, args.steps), 1):
        x, y = batch(key, corpus.train, args.batch_size, args.context)
        loss, grads = loss_and_grads(params, x, y)
        params, opt_state = opt.update(params, grads, opt_state)
        run.step_losses.append(float(loss))
        if progress:
            elapsed = time.perf_counter() - start
            progress.update(step, run.step_losses[-1], step * x.numel() / elapsed)
    run.seconds = time.perf_counter() - start
    run.tokens_per_second = args.steps * args.batch_size * args.context / run.seconds
    run.params = params

    def eval_loss(x, y):
        return sequence_cross_entropy(model.apply(params, x)[0], y)[0]

    run.train_loss = evaluate(eval_loss, corpus.train, args, eval_key)
    run.val_loss = evaluate(eval_loss, corpus.val, args, eval_key)
    if args.sample_length:
        run.sample = sample(model.apply, params, corpus, args, sample_key, args.sample_length)
    return run


def train_torch(args, corpus: Corpus, initial_params) -> Run:
    """The same run in torch.nn + autograd + torch.optim.AdamW, from the same weights and batches."""
    dtype = dtype_of(args.dtype)
    _, data_key, eval_key, _ = fnn.random.split(fnn.random.key(args.seed), 4)
    model = make_torch_model(len(corpus.chars), args.embed, args.heads, args.layers, args.context)
    model.to(dtype)
    load_torch_model(model, initial_params, args.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    run = Run()
    start = time.perf_counter()
    with torch.enable_grad():
        for key in fnn.random.split(data_key, args.steps):
            x, y = batch(key, corpus.train, args.batch_size, args.context)
            opt.zero_grad()
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            )
            loss.backward()
            opt.step()
            run.step_losses.append(float(loss.detach()))
    run.seconds = time.perf_counter() - start
    run.tokens_per_second = args.steps * args.batch_size * args.context / run.seconds

    def eval_loss(x, y):
        with torch.no_grad():
            logits = model(x)
            return torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
            )

    run.train_loss = evaluate(eval_loss, corpus.train, args, eval_key)
    run.val_loss = evaluate(eval_loss, corpus.val, args, eval_key)
    return run


def plot(path: str, fnn_run: Run, torch_run: Run | None) -> str:
    import pathlib

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(fnn_run.step_losses, label="fnn", linewidth=1.2)
    if torch_run is not None:
        ax.plot(torch_run.step_losses, "--", label="torch.nn + autograd", linewidth=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/char)")
    ax.set_title("char-level GPT on pydoc_data.topics")
    ax.legend()
    fig.tight_layout()
    file = out / "char_gpt_loss.png"
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return str(file)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument(
        "--remat",
        choices=["none", "mlp", "block"],
        default="none",
        help="recompute each block's MLP, or each whole block, in the backward pass",
    )
    parser.add_argument(
        "--mlp",
        choices=["fused", "serial"],
        default="fused",
        help="each block's MLP as one fused Mlp layer, or as serial(Dense, Gelu, Dense)",
    )
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--plot", metavar="DIR", help="draw the loss curves into DIR")
    return parser.parse_args(argv)


def main(argv=None) -> tuple[Run, Run | None]:
    args = parse_args(argv)
    corpus = load_corpus()
    print(
        f"pydoc_data.topics: {len(corpus.train) + len(corpus.val):,} characters, "
        f"{len(corpus.chars)} distinct; train {len(corpus.train):,} / val {len(corpus.val):,}"
    )
    print(
        f"GPT: {args.layers} layers, width {args.embed}, {args.heads} heads, context "
        f"{args.context}, batch {args.batch_size}, {args.steps} steps of AdamW ({args.dtype})"
    )
    run = train_fnn(args, corpus)
    print(
        f"fnn   : train loss {run.train_loss:.4f}  val loss {run.val_loss:.4f}  "
        f"({run.seconds:.1f} s, {run.tokens_per_second / 1e3:.1f}k tok/s)"
    )
    torch_run = None
    if args.compare_torch:
        initial = init_params(
            make_model(
                len(corpus.chars), args.embed, args.heads, args.layers, args.context, mlp=args.mlp
            ),
            args.context,
            fnn.random.split(fnn.random.key(args.seed), 4)[0],
            dtype_of(args.dtype),
        )
        torch_run = train_torch(args, corpus, initial)
        horizon = min(200, args.steps)
        run.torch_gap = max(
            abs(a - b) for a, b in zip(run.step_losses[:horizon], torch_run.step_losses[:horizon])
        )
        print(
            f"torch : train loss {torch_run.train_loss:.4f}  val loss {torch_run.val_loss:.4f}  "
            f"({torch_run.seconds:.1f} s, {torch_run.tokens_per_second / 1e3:.1f}k tok/s)"
        )
        print(f"max |loss_fnn − loss_torch| over the first {horizon} steps: {run.torch_gap:.2e}")
    if run.sample:
        print("sample:\n" + run.sample)
    if args.plot:
        print("loss curves:", plot(args.plot, run, torch_run))
    return run, torch_run


if __name__ == "__main__":
    main()
