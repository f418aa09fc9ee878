"""From a PyTorch model to the rows worth labeling: scikit-learn's digits, end to end.

    pip install "pickaxe[torch,demo]"
    python examples/torch_digits.py [--out DIR]

1. trains a small network (dropout and BatchNorm) on 200 labeled digits;
2. runs it over the 1,597 unlabeled ones with `pickaxe.torch.predict`: 20 Monte Carlo
   dropout passes (only the dropout modules in training mode) and the last hidden layer's
   embeddings, written to a Parquet pool as the rows are computed;
3. mines the pool with an MC dropout miner (BALD: the passes disagree) and an embedding
   miner (far from the labeled digits' embeddings), and shows that the rows they pick are
   ones the model gets wrong more often than random rows;
4. writes the picks as Label Studio tasks (`tasks.json`), ready to import.

About 25 s on two busy cores (20-35 s measured), torch's import included; all on the CPU.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the imports: "done in" counts torch's import too

import argparse  # noqa: E402
from collections import OrderedDict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import pickaxe as px  # noqa: E402
from pickaxe.torch import predict  # noqa: E402


def network() -> torch.nn.Module:
    return torch.nn.Sequential(OrderedDict([
        ("hidden", torch.nn.Linear(64, 128)),
        ("norm", torch.nn.BatchNorm1d(128)),
        ("relu", torch.nn.ReLU()),
        ("drop", torch.nn.Dropout(0.3)),
        ("features", torch.nn.Linear(128, 32)),
        ("act", torch.nn.ReLU()),           # its output: the 32-D embeddings
        ("drop2", torch.nn.Dropout(0.3)),
        ("head", torch.nn.Linear(32, 10)),
    ]))


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 100) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="pickaxe-torch-digits", help="folder for pool.parquet and tasks.json")
    parser.add_argument("--passes", type=int, default=20, help="Monte Carlo dropout passes")
    parser.add_argument("--size", type=int, default=50, help="rows each miner picks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # A tiny network: one thread is faster than two that wait for each other (on a busy
    # 2-core machine, 2 threads made training 5x slower).
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    x_all = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y_all = torch.tensor(digits.target)
    order = np.random.default_rng(args.seed).permutation(len(x_all))
    labeled, unlabeled = order[:200], order[200:]

    torch.manual_seed(args.seed)
    model = network()
    train(model, x_all[labeled], y_all[labeled])

    # The pool: each batch is (pixels, digit index); ids=1 takes the index as the row's id.
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_all[unlabeled], torch.tensor(unlabeled)), batch_size=256)
    torch.manual_seed(args.seed)  # the dropout passes draw from torch's generator
    pool = predict(model, loader, passes=args.passes, dropout=True, layer="act", ids=1,
                   out=out / "pool.parquet", overwrite=True)
    # The labeled digits' embeddings: what the embedding miner measures distance to.
    reference = predict(model, [x_all[labeled]], layer="act")["embeddings"]
    print(f"pool: {len(unlabeled)} rows, {args.passes} dropout passes and 32-D embeddings -> {pool}")

    wrong = _wrong_rows(model, x_all, y_all)
    random_rate = wrong[unlabeled].mean()
    mc = px.MCDropoutMiner(args.size).mine(pool)                          # BALD
    far = px.EmbeddingDistanceMiner(args.size, reference, k=10).mine(pool)
    rand = px.RandomMiner(args.size, seed=args.seed).mine(pool)
    print(f"\nthe model's error rate on {args.size} rows picked by each miner "
          f"(on the whole unlabeled pool: {random_rate:.1%})")
    for name, sel in (("MC dropout (mutual information)", mc), ("embedding distance", far), ("random", rand)):
        print(f"  {name:<32} {wrong[sel.ids].mean():6.1%}   e.g. digits {sel.ids[:5].tolist()}")

    both = px.combine([px.MCDropoutMiner(1), px.EmbeddingDistanceMiner(1, reference, k=10)], size=args.size).mine(pool)
    both.to_label_studio(out / "tasks.json")
    print(f"\n{len(both)} picks of both miners as Label Studio tasks -> {out / 'tasks.json'}")
    print(f"done in {time.perf_counter() - STARTED:.1f} s (imports included)")


def _wrong_rows(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Whether the model (in eval mode) misclassifies each digit."""
    model.eval()
    with torch.inference_mode():
        return (model(x).argmax(1) != y).numpy()


if __name__ == "__main__":
    main()
