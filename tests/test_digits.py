"""The diversity miners find novel classes on real data (scikit-learn's bundled digits).

A small MLP learns classes 0-4; the pool is held-out rows of 0-4 plus every row of 5-9.
Each miner's scores must separate the novel classes (AUROC), as issue #3 asks.
"""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_digits  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402

import pickaxe as px  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    known = y < 5
    x_train, x_held, y_train, _ = train_test_split(
        x[known], y[known], test_size=0.3, random_state=0, stratify=y[known]
    )
    pool = np.vstack([x_held, x[~known]])
    novel = np.r_[np.zeros(len(x_held)), np.ones(int((~known).sum()))]
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=0).fit(x_train, y_train)

    def hidden(a):
        return np.maximum(a @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)

    def logits(a):
        return hidden(a) @ mlp.coefs_[1] + mlp.intercepts_[1]

    return {
        "train_embeddings": hidden(x_train),
        "train_pixels": x_train,
        "pool": {
            "embeddings": hidden(pool),
            "logits": logits(pool),
            "pixels": pool,
            "novel": novel,
        },
        "novel": novel,
    }


def auroc(miner, pool, novel):
    """AUROC of the miner's scores over the whole pool (size = every row)."""
    sel = miner.mine(pool)
    assert len(sel) == len(novel)
    scores = np.empty(len(novel))
    scores[sel.ids] = sel.scores
    return roc_auc_score(novel, scores)


def test_embedding_distance_separates_novel_classes(digits):
    pool = {"embeddings": digits["pool"]["embeddings"]}
    miner = px.EmbeddingDistanceMiner(len(digits["novel"]), digits["train_embeddings"])
    assert auroc(miner, pool, digits["novel"]) >= 0.97


def test_embedding_distance_through_an_index(digits, monkeypatch):
    monkeypatch.setattr(px.index, "EXACT_MAX_ROWS", 0)  # force the hnswlib graph
    index = px.ReferenceIndex(digits["train_embeddings"], metric="cosine", threads=1)
    assert index.method == "hnsw"
    pool = {"embeddings": digits["pool"]["embeddings"]}
    miner = px.EmbeddingDistanceMiner(len(digits["novel"]), index, search="hnsw")
    assert auroc(miner, pool, digits["novel"]) >= 0.97


@pytest.mark.parametrize("features", ["pixels", "embeddings"])
def test_novelty_separates_novel_classes(digits, features):
    train = digits["train_pixels"] if features == "pixels" else digits["train_embeddings"]
    pool = {"embeddings": digits["pool"][features]}
    miner = px.NoveltyMiner(len(digits["novel"]), train, k=20)
    assert auroc(miner, pool, digits["novel"]) >= 0.95


def test_activation_on_logits_separates_novel_classes(digits):
    pool = {"logits": digits["pool"]["logits"]}
    miner = px.ActivationMiner(len(digits["novel"]), field="logits")
    assert auroc(miner, pool, digits["novel"]) >= 0.90
