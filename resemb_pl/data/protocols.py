"""Interactions -> CTR samples: the DIN protocol and the MovieLens protocol, with named splits.

A sample is a history (a slice of a shared item array), a target item and a label. Histories
are stored as ``(hist_start, hist_len)`` into :attr:`Samples.seq` rather than copied, so the
samples of a user share one copy of the sequence.

Leakage rule (DESIGN.md): the graph sequences returned with the samples never contain an
interaction that is the target of an evaluation sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from resemb_pl.data.interactions import Interactions
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Split = Literal["last", "user"]


@dataclass
class Samples:
    """CTR samples whose histories are slices of a shared item array.

    Attributes:
        seq: The shared item array that histories slice.
        hist_start: Start of each sample's history in ``seq``.
        hist_len: Length of each sample's history (already cut to ``max_len``).
        target: Target item of each sample.
        label: 1.0 for a click (positive), 0.0 otherwise.
        user: Dense user id of each sample (used by GAUC).
    """

    seq: np.ndarray
    hist_start: np.ndarray
    hist_len: np.ndarray
    target: np.ndarray
    label: np.ndarray
    user: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, index: np.ndarray) -> Samples:
        """The samples at ``index`` (sharing ``seq``)."""
        return Samples(
            self.seq, *(getattr(self, f.name)[index] for f in fields(self) if f.name != "seq")
        )

    def history_cover(self) -> np.ndarray:
        """How many samples' histories cover each position of ``seq`` (``len(seq)``,), by a
        difference array: item occurrences in histories without materialising them."""
        cover = np.zeros(len(self.seq) + 1, dtype=np.int64)
        np.add.at(cover, self.hist_start, 1)
        np.add.at(cover, self.hist_start + self.hist_len, -1)
        return np.cumsum(cover[:-1])

    def history(self, i: int) -> np.ndarray:
        """The history of sample ``i``, oldest first."""
        return self.seq[self.hist_start[i] : self.hist_start[i] + self.hist_len[i]]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{f.name}": getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Samples:
        return cls(**{f.name: arrays[f"{prefix}{f.name}"] for f in fields(cls)})


@dataclass
class SampleSplits:
    """Train, validation and test samples, and the training sequences the graph is built from.

    Iterating yields ``train, val, test``. The graph sequences are ``graph_items`` cut into
    pieces of ``graph_lengths``, one per user, the dense user of each in ``graph_users``.
    """

    train: Samples
    val: Samples
    test: Samples
    graph_items: np.ndarray
    graph_lengths: np.ndarray
    graph_users: np.ndarray

    def __iter__(self):
        return iter((self.train, self.val, self.test))


def _user_starts(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return starts, np.diff(np.r_[starts, len(users)])


def graph_sequences(
    users: np.ndarray, items: np.ndarray, in_graph: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph sequences of events sorted by user: items, length per user, and the user.

    Args:
        users: Dense user of each event (grouped by user).
        items: Item of each event.
        in_graph: Which events enter the graph.
    """
    graph_users = users[in_graph]
    if not len(graph_users):
        return items[in_graph], np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts, lengths = _user_starts(graph_users)
    return items[in_graph], lengths.astype(np.int64), graph_users[starts].astype(np.int64)


def sample_negatives(
    users: np.ndarray,
    user_items_key: np.ndarray,
    num_items: int,
    rng: np.random.Generator,
    *,
    user_vocab: np.ndarray | None = None,
    source: str = "negative sampling",
) -> np.ndarray:
    """Draw, for each entry of ``users``, a random item in ``1..num_items`` that user never touched.

    Args:
        users: Dense user id per negative to draw.
        user_items_key: Sorted ``user * (num_items + 1) + item`` of every event.
        num_items: Number of items ``H``.
        rng: Random generator.
        user_vocab: Original user ids, to name a user in an error.
        source: The data, to name it in an error.

    Rejection sampling, vectorised: each round redraws only the collisions. Users still left
    after a few rounds (they touched nearly every item) draw from their untouched items.

    Raises:
        DataError: If a user has touched every item, naming the user.
    """
    n = num_items + 1
    out = rng.integers(1, n, size=len(users))
    todo = np.arange(len(users))
    for round_ in range(50):  # rounds of rejection, each vectorised over all pending draws
        key = users[todo] * n + out[todo]
        pos = np.minimum(np.searchsorted(user_items_key, key), len(user_items_key) - 1)
        todo = todo[user_items_key[pos] == key]
        if not len(todo):
            return out
        if round_ < 49:
            out[todo] = rng.integers(1, n, size=len(todo))
    for user in np.unique(users[todo]):
        lo, hi = np.searchsorted(user_items_key, [user * n, (user + 1) * n])
        free = np.setdiff1d(np.arange(1, n), user_items_key[lo:hi] - user * n)
        if not len(free):
            name = user_vocab[user] if user_vocab is not None else user
            raise DataError(
                f"{source}: user {name!r} has interacted with every one of the {num_items} "
                "items, so no negative item can be drawn for them"
            )
        mine = todo[users[todo] == user]
        out[mine] = rng.choice(free, size=len(mine))
    return out


def _pairs(
    rng: np.random.Generator,
    seq_users: np.ndarray,
    starts: np.ndarray,
    pos: np.ndarray,
    items: np.ndarray,
    key: np.ndarray,
    num_items: int,
    max_len: int,
    user_vocab: np.ndarray | None = None,
    source: str = "negative sampling",
) -> Samples:
    """Positive and negative samples for the positions ``pos`` (index of the target in ``items``).

    ``starts`` is the sequence start of each target's user; the history is everything before.
    """
    k = pos - starts
    hist_len = np.minimum(k, max_len)
    hist_start = pos - hist_len
    users = seq_users[pos]
    neg = sample_negatives(users, key, num_items, rng, user_vocab=user_vocab, source=source)
    # Interleave: positive then negative of the same position.
    m = len(pos)
    return Samples(
        seq=items,
        hist_start=np.repeat(hist_start, 2),
        hist_len=np.repeat(hist_len, 2),
        target=np.stack([items[pos], neg], 1).reshape(-1),
        label=np.tile(np.array([1.0, 0.0], dtype=np.float32), m),
        user=np.repeat(users, 2),
    )


def _split_users(
    rng: np.random.Generator, num_users: int, user_fractions: tuple[float, float]
) -> np.ndarray:
    """Group 0 (train), 1 (validation) or 2 (test) of each user, by a seeded permutation."""
    if not (0 < user_fractions[0] < 1 and 0 <= user_fractions[1] < 1 - user_fractions[0]):
        raise ConfigError("data.user_fractions: need 0 < train < 1 and val < 1 - train, "
                          f"got {user_fractions}")
    perm = rng.permutation(num_users)
    n_train = int(round(user_fractions[0] * num_users))
    n_val = int(round(user_fractions[1] * num_users))
    group = np.full(num_users, 2, dtype=np.int64)
    group[perm[:n_train]] = 0
    group[perm[n_train : n_train + n_val]] = 1
    return group


def din_samples(
    interactions: Interactions,
    max_len: int = 50,
    split: Split = "last",
    seed: int = 0,
    user_fractions: tuple[float, float] = (0.8, 0.1),
    train_on_val: bool = False,
) -> SampleSplits:
    r"""The DIN protocol: for every sequence :math:`s_1..s_n` and :math:`k = 1..n-1`, the history
    :math:`s_1..s_k` (its last ``max_len``) with one positive (target :math:`s_{k+1}`) and one
    negative (an item the user never touched).

    Splits:
        - ``"last"`` (DIN repo, BARS): :math:`k = n-1` is the test pair, :math:`k = n-2` the
          validation pair, :math:`k \le n-3` the training pairs. The graph is built from
          :math:`s_1..s_{n-2}`, so neither a validation nor a test target is in it. With
          ``train_on_val`` the training pairs are :math:`k \le n-2`, as in the DIN repository,
          BARS and the peers' harness (every pair but the test one), and the graph is built
          from :math:`s_1..s_{n-1}`: the validation pairs are then training pairs (an
          in-sample number), and the test targets stay out of the graph.
        - ``"user"`` (res-embedding paper): users are split into train / validation / test by
          ``user_fractions`` (train, val; test gets the rest); every pair of a user goes to the
          user's split, and the graph is built from the training users' sequences.

    Args:
        interactions: The canonical table.
        max_len: Longest history kept (the most recent ``max_len`` items).
        split: ``"last"`` or ``"user"``.
        seed: Seed of the negative sampling and the user split.
        user_fractions: Fractions of users in train and validation for ``split="user"``.
        train_on_val: ``split="last"``: train on the validation pairs too.

    Returns:
        :class:`SampleSplits`; ``train, val, test = din_samples(...)`` unpacks the samples.
    """
    if train_on_val and split != "last":
        raise ConfigError(f"data.train_on_val: only with data.split 'last', not {split!r}")
    if max_len < 1:
        raise ConfigError(f"data.max_len: must be >= 1, got {max_len}")
    rng = np.random.default_rng(seed)
    frame = interactions.frame
    users = frame["user_id"].to_numpy().astype(np.int64)
    items = frame["item_id"].to_numpy().astype(np.int64)
    starts, lengths = _user_starts(users)
    key = np.sort(users * (interactions.num_items + 1) + items)
    start_of = np.repeat(starts, lengths)
    end_of = np.repeat(starts + lengths, lengths)
    idx = np.arange(len(items))
    k = idx - start_of  # the target's position in its sequence (0-based); history length = k
    n_of = end_of - start_of

    def make(pos: np.ndarray) -> Samples:
        return _pairs(rng, users, start_of[pos], pos, items, key, interactions.num_items, max_len,
                      interactions.user_vocab, interactions.source)

    if split == "last":
        test = make(idx[k == n_of - 1][n_of[k == n_of - 1] >= 2])
        val = make(idx[(k == n_of - 2) & (k >= 1)])
        last_train = n_of - (2 if train_on_val else 3)
        train = make(idx[(k >= 1) & (k <= last_train)])
        in_graph = k <= last_train  # s_1..s_{n-2} (s_1..s_{n-1} with train_on_val)
    elif split == "user":
        group_of = np.repeat(_split_users(rng, len(starts), user_fractions), lengths)
        train, val, test = (make(idx[(k >= 1) & (group_of == g)]) for g in range(3))
        in_graph = group_of == 0
    else:
        raise ConfigError(f"data.split: unknown split {split!r}; choose 'last' or 'user'")

    return SampleSplits(train, val, test, *graph_sequences(users, items, in_graph))


def movielens_samples(
    interactions: Interactions,
    max_len: int = 50,
    seed: int = 0,
    user_fractions: tuple[float, float] = (0.8, 0.1),
    like_threshold: float = 3.0,
) -> SampleSplits:
    """The MovieLens protocol (res-embedding §5.1, DIN §6.1): every rating event is a sample.

    The history of an event is the up to ``max_len`` most recent movies that the user rated
    ``>= like_threshold`` before it (earlier in the user's time-ordered sequence; ties keep file
    order), and the label is 1 when the rating is ``> like_threshold``. Users are split into
    train, validation and test by ``user_fractions``. The graph is built from the training
    users' liked sequences only.

    Args:
        interactions: The canonical table; it must have a ``rating`` column.
        max_len: Longest history kept (paper: 50).
        seed: Seed of the user split.
        user_fractions: Fractions of users in train and validation; test gets the rest.
        like_threshold: Ratings at or above it enter histories; above it are positives.
    """
    if max_len < 1:
        raise ConfigError(f"data.max_len: must be >= 1, got {max_len}")
    frame = interactions.frame
    if "rating" not in frame.columns:
        raise DataError(f"{interactions.source}: the MovieLens protocol needs a 'rating' column")
    rng = np.random.default_rng(seed)
    users = frame["user_id"].to_numpy().astype(np.int64)
    items = frame["item_id"].to_numpy().astype(np.int64)
    rating = frame["rating"].to_numpy()
    liked = rating >= like_threshold
    starts, lengths = _user_starts(users)
    seq = items[liked]
    before = np.cumsum(liked) - liked  # liked events before each event, over all users
    user_first = np.repeat(before[starts], lengths)  # the user's first liked slot in ``seq``
    hist_len = np.minimum(before - user_first, max_len)
    everything = Samples(
        seq=seq,
        hist_start=before - hist_len,
        hist_len=hist_len,
        target=items,
        label=(rating > like_threshold).astype(np.float32),
        user=users,
    )
    group_of = np.repeat(_split_users(rng, len(starts), user_fractions), lengths)
    train, val, test = (everything.subset(np.flatnonzero(group_of == g)) for g in range(3))
    in_graph = liked & (group_of == 0)
    return SampleSplits(train, val, test, *graph_sequences(users, items, in_graph))
