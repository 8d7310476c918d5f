"""The interest-delay generator as an impression log (items shown, clicks labelled, times).

:func:`generate_impressions` draws the log; :func:`write_impressions` writes it as partitioned
parquet under non-canonical column names, as a Spark job would (``python -m
resemb_pl.data.synthetic impressions-small logs/impressions-small``). The generator of
interaction sequences is :mod:`resemb_pl.data.synthetic`, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from resemb_pl.atomic import atomic_folder
from resemb_pl.data.synthetic import Population, _Catalogue
from resemb_pl.errors import ConfigError, ResembError

# -- impression logs -----------------------------------------------------------------------------

#: Where the synthetic impression log's ids and times start (its column names are
#: :data:`IMPRESSION_COLUMNS`; a real log's ids are not dense either).
USER_ID_OFFSET = 1_000_000
ITEM_ID_OFFSET = 500_000
CATEGORY_ID_OFFSET = 9_000
START_TIME = 1_767_225_600  # 2026-01-01 00:00:00 UTC, in Unix seconds

#: ``data.columns`` for the synthetic impression log: our roles -> its column names.
IMPRESSION_COLUMNS = {
    "user_id": "uid",
    "item_id": "adgroup_id",
    "label": "clk",
    "timestamp": "time_stamp",
    "category_id": "cate_id",
}


@dataclass(frozen=True)
class ImpressionsConfig(Population):
    """Parameters of the impression-log mode of the interest-delay generator.

    A user browses in sessions at random times over ``days`` days. Each session is driven by one
    interest drawn from the user's set (Assumption 1) and shows ``pages_per_session`` pages of
    ``page_size`` items; the items of a page are shown at the same second. A shown item comes from
    the session's interest domain with probability ``p_session``, from another of the user's
    interests with probability ``p_interest``, and otherwise from any domain by popularity. The
    click probability is ``ctr_session``, ``ctr_interest`` or ``ctr_other`` by the same three
    cases, times a per-item appeal (log-normal, median 1).

    Args (after the :class:`~resemb_pl.data.synthetic.Population` fields):
        min_sessions: Fewest sessions per user.
        max_sessions: Most sessions per user (uniform between the two).
        pages_per_session: Pages shown in a session, 30 seconds apart.
        page_size: Items shown on one page, at one timestamp.
        days: Length of the log in days (one ``dt=`` partition per day).
        p_session: Share of impressions from the session's interest domain.
        p_interest: Share of impressions from the user's other interests.
        ctr_session: Click probability of an item of the session's interest.
        ctr_interest: Click probability of an item of another interest of the user.
        ctr_other: Click probability of any other item.
        zipf: Exponent of item popularity within a domain and of domain popularity.
    """

    min_sessions: int = 2
    max_sessions: int = 6
    pages_per_session: int = 3
    page_size: int = 4
    days: int = 8
    p_session: float = 0.5
    p_interest: float = 0.2
    ctr_session: float = 0.2
    ctr_interest: float = 0.06
    ctr_other: float = 0.01
    zipf: float = 1.0


IMPRESSION_PRESETS: dict[str, ImpressionsConfig] = {
    # For unit tests: about 6,000 impressions.
    "impressions-tiny": ImpressionsConfig(150, 300, 15, 5),
    # About 200k impressions (48 per user on average): trains in minutes on a CPU.
    "impressions-small": ImpressionsConfig(4_200, 3_000, 60, 12),
    # About 20M impressions (60 per user on average), about 0.1 GB of parquet: the size benchmark.
    "impressions-20m": ImpressionsConfig(333_000, 200_000, 2_000, 200, max_sessions=8),
}


def generate_impressions(
    config: ImpressionsConfig | str, seed: int = 0
) -> tuple[pa.Table, np.ndarray]:
    """Generate an impression log: one row per item shown to a user, with a click label.

    Args:
        config: An :class:`ImpressionsConfig` or the name of a preset (``impressions-tiny``,
            ``impressions-small``, ``impressions-20m``).
        seed: Seed of the generator; the same seed gives the same log.

    Returns:
        The log as a :class:`pyarrow.Table` in time order, with the columns ``uid``,
        ``adgroup_id``, ``cate_id``, ``pid`` (position on the page), ``clk`` (0 or 1) and
        ``time_stamp`` (Unix seconds), and the true interest domain of every item (indexed by
        ``adgroup_id - ITEM_ID_OFFSET``; entry 0 unused).

    Example::

        table, item_domain = generate_impressions("impressions-tiny", seed=0)
        table.column("clk").to_numpy().mean()
    """
    if isinstance(config, str):
        if config not in IMPRESSION_PRESETS:
            raise ConfigError(
                f"preset: unknown impressions preset {config!r}; "
                f"choose from {sorted(IMPRESSION_PRESETS)}"
            )
        config = IMPRESSION_PRESETS[config]
    c = config
    if c.num_domains > c.num_items or c.num_categories > c.num_domains:
        raise ConfigError("synthetic config needs num_categories <= num_domains <= num_items")
    if not (c.p_session >= 0 and c.p_interest >= 0 and c.p_session + c.p_interest <= 1):
        raise ConfigError("synthetic config needs p_session, p_interest >= 0 and their sum <= 1")

    rng = np.random.default_rng(seed)
    cat = _Catalogue.draw(rng, c.num_items, c.num_domains, c.zipf)
    appeal = np.r_[0.0, rng.lognormal(0.0, 0.3, c.num_items)]

    # Users, their interests and their sessions (one interest each), at random times.
    k = c.interests_per_user
    interests = rng.choice(c.num_domains, size=(c.num_users, k), p=cat.domain_p)
    sessions = rng.integers(c.min_sessions, c.max_sessions + 1, size=c.num_users)
    session_user = np.repeat(np.arange(c.num_users), sessions)
    session_domain = interests[session_user, rng.integers(0, k, size=len(session_user))]
    length = 30 * c.pages_per_session
    session_start = rng.integers(0, c.days * 86_400 - length, size=len(session_user))

    # Impressions: pages of page_size items, each page at one second, 30 seconds apart.
    per_session = c.pages_per_session * c.page_size
    session = np.repeat(np.arange(len(session_user)), per_session)
    slot = np.tile(np.arange(per_session), len(session_user))
    user = session_user[session]
    time = session_start[session] + 30 * (slot // c.page_size)
    del slot
    active = session_domain[session]
    del session
    draw = rng.random(len(user))
    other_interest = interests[user, rng.integers(0, k, size=len(user))]
    anywhere = rng.choice(c.num_domains, size=len(user), p=cat.domain_p)
    domain = np.where(
        draw < c.p_session, active,
        np.where(draw < c.p_session + c.p_interest, other_interest, anywhere),
    )
    del draw, other_interest, anywhere
    item = cat.items(rng, domain)
    del domain

    # Clicks: the interest-delay model, by the shown item's true domain.
    shown = cat.item_domain[item]
    ctr = np.where(
        shown == active, c.ctr_session,
        np.where((interests[user] == shown[:, None]).any(1), c.ctr_interest, c.ctr_other),
    )
    del shown, active
    click = rng.random(len(user)) < np.minimum(ctr * appeal[item], 1.0)
    del ctr

    # A log is written in time order.
    order = np.argsort(time, kind="stable")
    category_of_domain = (np.arange(c.num_domains) * c.num_categories) // c.num_domains + 1
    table = pa.table(
        {
            "uid": (user[order] + USER_ID_OFFSET).astype(np.int64),
            "adgroup_id": (item[order] + ITEM_ID_OFFSET).astype(np.int64),
            "cate_id": (category_of_domain[cat.item_domain[item[order]]] + CATEGORY_ID_OFFSET),
            "pid": (np.tile(np.arange(c.page_size), len(user) // c.page_size)[order]).astype(
                np.int8
            ),
            "clk": click[order].astype(np.int8),
            "time_stamp": (time[order] + START_TIME).astype(np.int64),
        }
    )
    return table, cat.item_domain


def write_impressions(
    preset: ImpressionsConfig | str,
    folder: str | Path,
    seed: int = 0,
    rows_per_file: int = 1_000_000,
) -> Path:
    """Write a generated impression log as Spark would: ``dt=YYYY-MM-DD/part-NNNNN.parquet``.

    The columns are those of :func:`generate_impressions` (``dt``, the day of ``time_stamp``,
    is the hive partition, not a column of the files); read it with ``source: impressions`` and
    ``columns`` = :data:`IMPRESSION_COLUMNS`. The folder is replaced as a whole: it is written
    beside ``folder`` and renamed into place, so an interrupted run leaves the old one.

    Args:
        preset: An :class:`ImpressionsConfig` or the name of an impressions preset.
        folder: The folder to create (or replace).
        seed: Seed of the generator.
        rows_per_file: Most rows per part file.

    Returns:
        The folder.

    Example::

        write_impressions("impressions-small", "logs/impressions-small", seed=0)
    """
    import pyarrow.parquet as pq

    if rows_per_file < 1:
        raise ConfigError(f"rows_per_file: must be >= 1, got {rows_per_file}")
    table, _ = generate_impressions(preset, seed)
    folder = Path(folder)
    day = (table.column("time_stamp").to_numpy() - START_TIME) // 86_400
    bounds = np.flatnonzero(np.r_[True, day[1:] != day[:-1], True])  # the log is in time order

    with atomic_folder(folder) as tmp:
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            date = np.datetime64(START_TIME, "s").astype("datetime64[D]") + int(day[lo])
            part_dir = tmp / f"dt={date}"
            part_dir.mkdir()
            for n, start in enumerate(range(lo, hi, rows_per_file)):
                part = table.slice(start, min(rows_per_file, hi - start))
                pq.write_table(part, part_dir / f"part-{n:05d}.parquet")
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m resemb_pl.data.synthetic PRESET FOLDER``: write an impression log."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m resemb_pl.data.synthetic",
        description="Write a synthetic impression log as partitioned parquet "
        "(dt=YYYY-MM-DD/part-NNNNN.parquet) with the columns uid, adgroup_id, cate_id, pid, "
        "clk, time_stamp.",
    )
    parser.add_argument("preset", choices=sorted(IMPRESSION_PRESETS))
    parser.add_argument("folder", type=Path, help="the folder to create (replaced as a whole)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows-per-file", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    try:
        folder = write_impressions(args.preset, args.folder, args.seed, args.rows_per_file)
    except ResembError as err:
        print(f"resemb-pl: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path that cannot be written: name it
        print(f"resemb-pl: error: {err.filename or args.folder}: {err.strerror or err}",
              file=sys.stderr)
        return 2
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in folder.rglob("part-*.parquet"))
    print(f"wrote {rows:,} impressions to {folder}")
    return 0
