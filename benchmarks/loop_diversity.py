"""Queue orders in feature space (diversity, representativeness), tried on the loop stand-in.

The product's orders see only each item's stored top-k probabilities. These also see one
embedding per photo (the frozen backbone's pooled features, L2-normalised), which the
product does not store today:

- typiclust: k-means of the pool (labelled + unlabelled) into labelled + budget clusters;
  the clusters without a label first, largest first, each serving its most typical
  unlabelled photo (highest inverse mean squared distance to its nearest neighbours in the
  cluster); then the next turn (Hacohen et al. 2022, "Active learning on a budget").
- typiclust-then-balanced: typiclust while the job's least-taught predicted label has fewer
  than TAUGHT human labels, then the product's `balanced`.
- kcenter: greedy k-center from the labelled photos (the photo farthest from every labelled
  or already served photo next; Sener and Savarese 2018, "core-set").
- kmeanspp-margin: k-means++ seeding from the labelled photos, each draw weighted by the
  squared distance to the nearest chosen photo times (1 - margin): far and doubtful photos
  first (a scalar-uncertainty BADGE, Ash et al. 2020).
- cluster-margin: typiclust's clusters and turns, each cluster serving its smallest margin
  instead of its most typical photo.
- ...-then-balanced: any of them while a predicted label has fewer than TAUGHT labels, then
  the product's `balanced`.
- ...-then-adaptive: any of them while the labels average fewer than TAUGHT human labels
  each (the first round after the seed labels, here), then the product's `adaptive`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence

import torch
from sklearn.cluster import KMeans

from service.routing import QueueCandidate, queue_order

DIVERSITY_ORDERS = ("typiclust", "kcenter", "kmeanspp-margin", "cluster-margin")
THEN_BALANCED = "-then-balanced"
THEN_ADAPTIVE = "-then-adaptive"
TAUGHT = 10  # as the product's ADAPTIVE_TAUGHT
BUDGET = 100  # the photos a round reviews: typiclust's labelled + budget clusters
MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5  # clusters this small or smaller take their turns last
NEIGHBOURS = 20


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Every row scaled to length 1 (float32), so squared L2 distance is 2 - 2 cos."""
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared L2 distances between the rows of two unit-length matrices."""
    return (2.0 - 2.0 * a @ b.T).clamp_min(0.0)


def diversity_order(
    cands: Sequence[QueueCandidate],
    known: Mapping[str, int],
    x: torch.Tensor,
    labelled: Sequence[int],
    name: str,
    seed: int,
) -> list[int]:
    """The candidates' keys (rows of x, unit length) in the named order; `labelled` rows of
    x have human labels, `known` counts them per label."""
    if name.endswith(THEN_BALANCED):
        if min(known.get(c.label, 0) for c in cands) >= TAUGHT:
            return queue_order(cands, "balanced", seed=seed)
        name = name.removesuffix(THEN_BALANCED)
    if name.endswith(THEN_ADAPTIVE):
        if sum(known.values()) >= TAUGHT * len(known):
            return queue_order(cands, "adaptive", seed=seed, taught=known)
        name = name.removesuffix(THEN_ADAPTIVE)
    keys = sorted(c.key for c in cands)
    margin = {c.key: c.margin for c in cands}
    if name == "typiclust":
        return cluster_turns(x, labelled, keys, seed, lambda members: most_typical(x, members))
    if name == "cluster-margin":
        return cluster_turns(
            x, labelled, keys, seed, lambda members: min(members, key=lambda k: (margin[k], k))
        )
    if name == "kcenter":
        return farthest_first(x, labelled, keys, weight=None, rng=None)
    if name == "kmeanspp-margin":
        weight = torch.tensor([1.0 - margin[k] for k in keys]).clamp_min(1e-6)
        return farthest_first(x, labelled, keys, weight=weight, rng=random.Random(seed))
    raise ValueError(name)


def cluster_turns(
    x: torch.Tensor,
    labelled: Sequence[int],
    keys: list[int],
    seed: int,
    pick: Callable[[list[int]], int],
) -> list[int]:
    """TypiClust's turns: k-means of labelled + keys into len(labelled) + BUDGET clusters;
    clusters with the fewest labels first, then the largest; each turn, every cluster serves
    pick(its unserved keys)."""
    rows = [*labelled, *keys]
    count = min(len(labelled) + BUDGET, MAX_CLUSTERS, len(rows))
    cluster = KMeans(n_clusters=count, n_init=1, random_state=seed % 2**31).fit_predict(
        x[rows].numpy()
    )
    size = Counter(cluster.tolist())
    taught = Counter(cluster[: len(labelled)].tolist())
    members: dict[int, list[int]] = defaultdict(list)
    for key, c in zip(keys, cluster[len(labelled) :].tolist(), strict=True):
        members[c].append(key)
    visit = sorted(members, key=lambda c: (size[c] <= MIN_CLUSTER_SIZE, taught[c], -size[c], c))
    served: list[int] = []
    while visit:
        for c in visit:
            key = pick(members[c])
            members[c].remove(key)
            served.append(key)
        visit = [c for c in visit if members[c]]
    return served


def most_typical(x: torch.Tensor, members: list[int]) -> int:
    """The member with the smallest mean squared distance to its nearest fellow members
    (min(NEIGHBOURS, half the cluster) of them), as TypiClust's typicality."""
    if len(members) <= 2:
        return min(members)
    k = min(NEIGHBOURS, len(members) // 2)
    d = squared_distances(x[members], x[members])
    d.fill_diagonal_(float("inf"))
    spread = d.topk(k, dim=1, largest=False).values.mean(1)
    return members[int(spread.argmin())]


def farthest_first(
    x: torch.Tensor,
    labelled: Sequence[int],
    keys: list[int],
    weight: torch.Tensor | None,
    rng: random.Random | None,
) -> list[int]:
    """Keys one by one by their squared distance to the nearest labelled or served row:
    the largest first (rng None, k-center), or drawn with probability proportional to it
    times `weight` (k-means++ seeding)."""
    pool = x[keys]
    nearest = squared_distances(pool, x[list(labelled)]).min(1).values
    left = torch.ones(len(keys), dtype=torch.bool)
    served: list[int] = []
    for _ in keys:
        score = nearest * (weight if weight is not None else 1.0) * left
        if rng is None or float(score.sum()) <= 0:
            score = torch.where(left, score, torch.tensor(-1.0))
            i = int(score.argmax())
        else:
            i = _draw(score, rng)
        served.append(keys[i])
        left[i] = False
        nearest = torch.minimum(nearest, squared_distances(pool, pool[i : i + 1])[:, 0])
    return served


def _draw(score: torch.Tensor, rng: random.Random) -> int:
    """An index drawn with probability proportional to score (non-negative)."""
    cumulative = score.double().cumsum(0)
    target = rng.random() * float(cumulative[-1])
    index = torch.searchsorted(cumulative, torch.tensor([target], dtype=torch.float64), right=True)
    return min(int(index[0]), len(score) - 1)
