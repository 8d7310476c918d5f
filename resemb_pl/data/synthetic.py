"""The paper's interest-delay generator (res-embedding §3.2, Assumption 1).

There are ``num_domains`` interest domains and every item belongs to exactly one. A user holds a
small set of interests. Their behaviour sequence is ``p`` periods of ``period_len`` clicks; each
period is driven by one interest drawn from the user's set, and its items are drawn from
``P(x | z)``, a Zipf-like popularity within the domain. Repeated items in a user's sequence are
dropped (a user touches an item once, as in the Amazon 5-core data).

The true domain of every item is recorded in :attr:`Interactions.item_domain`. The category that
the model sees is coarser than the interest domain (``num_categories`` groups of domains), as in
real catalogues where one category holds several interests.

:func:`generate_impressions` is the same model as an impression log (items shown, clicks
labelled, real times), and :func:`write_impressions` writes it as partitioned parquet under
non-canonical column names, as a Spark job would::

    python -m resemb_pl.data.synthetic impressions-small logs/impressions-small
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from resemb_pl.data.interactions import Interactions
from resemb_pl.errors import ConfigError


@dataclass(frozen=True)
class Population:
    """The users, items and interests that both modes of the generator draw from.

    Args:
        num_users: Number of users.
        num_items: Number of items ``H``.
        num_domains: Number of interest domains ``Nz``.
        num_categories: Number of visible categories (groups of domains).
        interests_per_user: Size of each user's interest set.
    """

    num_users: int
    num_items: int
    num_domains: int
    num_categories: int
    interests_per_user: int = 2


@dataclass(frozen=True)
class SyntheticConfig(Population):
    """Parameters of the interest-delay generator: the :class:`Population` fields, then

    Args:
        min_periods: Fewest periods per user.
        max_periods: Most periods per user (uniform between the two).
        period_len: Clicks per period ``T``.
        zipf: Exponent of item popularity within a domain and of domain popularity.
    """

    min_periods: int = 1
    max_periods: int = 4
    period_len: int = 4
    zipf: float = 1.0


PRESETS: dict[str, SyntheticConfig] = {
    # For unit tests: a second to generate and train.
    "tiny": SyntheticConfig(300, 400, 20, 5, 2, 2, 3, 3, 1.0),
    # The quickstart: trains in minutes on a laptop CPU.
    "small": SyntheticConfig(8_000, 6_000, 100, 20, 2, 2, 4, 4, 1.0),
    # The paper's scales (DESIGN.md): about 1.69M and 8.9M clicks.
    "electronics": SyntheticConfig(192_403, 63_001, 801, 200, 2, 1, 5, 4, 1.0),
    "books": SyntheticConfig(603_669, 367_984, 1_602, 400, 3, 2, 6, 4, 1.0),
}


@dataclass(frozen=True)
class _Catalogue:
    """Items ``1..H`` in interest domains, with Zipf-like popularity within and across domains."""

    sizes: np.ndarray  # items per domain
    perm: np.ndarray  # items ordered by domain, then by popularity rank within the domain
    domain_start: np.ndarray  # first position of each domain in ``perm``
    item_domain: np.ndarray  # domain of every item, length H + 1 (entry 0 unused)
    domain_p: np.ndarray  # popularity of every domain
    zipf: float

    @classmethod
    def draw(cls, rng: np.random.Generator, num_items: int, num_domains: int, zipf: float):
        # Items 1..H are split into domains of random sizes; item ids are shuffled across domains.
        cuts = np.sort(rng.choice(np.arange(1, num_items), num_domains - 1, replace=False))
        sizes = np.diff(np.r_[0, cuts, num_items])
        perm = rng.permutation(num_items) + 1
        domain_start = np.r_[0, np.cumsum(sizes)[:-1]]
        item_domain = np.zeros(num_items + 1, dtype=np.int64)
        item_domain[perm] = np.repeat(np.arange(num_domains), sizes)
        # Within a domain, popularity follows Zipf over a random order of its items (perm
        # order). Domain popularity is Zipf-like too, over a random order of the domains.
        dom_w = 1.0 / np.arange(1, num_domains + 1) ** zipf
        dom_p = dom_w[rng.permutation(num_domains)]
        dom_p /= dom_p.sum()
        return cls(sizes, perm, domain_start, item_domain, dom_p, zipf)

    def items(self, rng: np.random.Generator, domain: np.ndarray) -> np.ndarray:
        """One item of each given domain, drawn by the domain's popularity law."""
        u = rng.random(len(domain))
        # Rank r within a domain of size n with P(r) ~ 1/(r+1)^s: invert a continuous
        # approximation of the CDF, vectorised over draws, then clip into range.
        n = self.sizes[domain].astype(np.float64)
        s = self.zipf
        if abs(s - 1.0) < 1e-9:
            rank = np.floor(np.exp(u * np.log(n + 1.0)) - 1.0)
        else:
            a = 1.0 - s
            rank = np.floor((1.0 + u * ((n + 1.0) ** a - 1.0)) ** (1.0 / a) - 1.0)
        rank = np.clip(rank.astype(np.int64), 0, self.sizes[domain] - 1)
        return self.perm[self.domain_start[domain] + rank]


def generate(config: SyntheticConfig | str, seed: int = 0) -> Interactions:
    """Generate an interest-delay data set.

    Args:
        config: A :class:`SyntheticConfig` or the name of a preset
            (``tiny``, ``small``, ``electronics``, ``books``).
        seed: Seed of the generator; the same seed gives the same table.

    Returns:
        The canonical interactions, with ``item_domain`` holding the true domain of every item.

    Example::

        data = generate("tiny", seed=0)
        data.num_items, data.item_domain[1:5]
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ConfigError(f"data.preset: unknown preset {config!r}; choose from "
                              f"{sorted(PRESETS)}")
        config = PRESETS[config]
    c = config
    if c.num_domains > c.num_items or c.num_categories > c.num_domains:
        raise ConfigError("synthetic config needs num_categories <= num_domains <= num_items")
    rng = np.random.default_rng(seed)
    cat = _Catalogue.draw(rng, c.num_items, c.num_domains, c.zipf)
    item_domain, dom_p = cat.item_domain, cat.domain_p

    # Users: interest sets (drawn by domain popularity; a repeated draw merges) and periods.
    k = c.interests_per_user
    interests = rng.choice(c.num_domains, size=(c.num_users, k), p=dom_p)
    periods = rng.integers(c.min_periods, c.max_periods + 1, size=c.num_users)
    user_of_period = np.repeat(np.arange(c.num_users), periods)
    pick = rng.integers(0, k, size=len(user_of_period))
    period_domain = interests[user_of_period, pick]

    # Clicks: period_len per period, item drawn by inverse-CDF on the domain's Zipf law.
    click_domain = np.repeat(period_domain, c.period_len)
    click_user = np.repeat(user_of_period, c.period_len)
    click_item = cat.items(rng, click_domain)

    frame = pd.DataFrame({"user_id": click_user, "item_id": click_item})
    frame = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    frame["timestamp"] = frame.groupby("user_id").cumcount().astype(np.int64)
    # Keep users with at least 3 events: a training, a validation and a test target.
    counts = frame["user_id"].map(frame["user_id"].value_counts())
    frame = frame[counts.to_numpy() >= 3].reset_index(drop=True)

    # Dense ids: keep item ids as generated (1..H) so that item_domain stays aligned; renumber
    # users densely. Items that no user clicked stay in the vocabulary (a catalogue).
    user_codes, user_vocab = pd.factorize(frame["user_id"], sort=True)
    category_of_domain = (np.arange(c.num_domains) * c.num_categories) // c.num_domains + 1
    frame = pd.DataFrame(
        {
            "user_id": user_codes.astype(np.int64),
            "item_id": frame["item_id"].to_numpy().astype(np.int64),
            "category_id": category_of_domain[item_domain[frame["item_id"].to_numpy()]],
            "timestamp": frame["timestamp"].to_numpy(),
        }
    )
    return Interactions(
        frame=frame,
        user_vocab=np.asarray(user_vocab),
        item_vocab=np.arange(1, c.num_items + 1),
        category_vocab=np.array([f"category_{i}" for i in range(1, c.num_categories + 1)],
                                dtype=object),
        item_domain=item_domain,
        catalogue_category=np.r_[0, category_of_domain[item_domain[1:]]],
        source=f"synthetic:{asdict(c)}:seed={seed}",
    )


# -- impression logs: resemb_pl.data.synthetic_impressions ------------------------------------
# Its names are re-exported here lazily (PEP 562): that module builds on Population and
# _Catalogue above, so it imports this one, not the other way round.
_IMPRESSION_NAMES = frozenset({
    "CATEGORY_ID_OFFSET", "IMPRESSION_COLUMNS", "IMPRESSION_PRESETS", "ITEM_ID_OFFSET",
    "START_TIME", "USER_ID_OFFSET", "ImpressionsConfig", "generate_impressions", "main",
    "write_impressions",
})

__all__ = ["PRESETS", "Population", "SyntheticConfig", "generate", *sorted(_IMPRESSION_NAMES)]


def __getattr__(name: str):
    if name in _IMPRESSION_NAMES:
        from resemb_pl.data import synthetic_impressions

        return getattr(synthetic_impressions, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    from resemb_pl.data.synthetic_impressions import main

    raise SystemExit(main())
