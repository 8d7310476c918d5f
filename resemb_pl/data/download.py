"""Fetch the official archives of the paper's data sets from their publishers.

Downloads stream to a temporary file next to the target, are checked against the publisher's
md5 where it is known, and are renamed into place only when complete. Where the network cannot
be reached, the error says so in one line and asks for the file to be fetched by hand; every
reader also accepts a path to a file downloaded by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from resemb_pl.atomic import atomic_open
from resemb_pl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
_SNAP = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A file as its publisher distributes it.

    Args:
        url: Where the publisher serves it.
        md5: The publisher's md5 (hex), or ``None`` where none is known.
    """

    url: str
    md5: str | None = None


# md5 values from GroupLens's ``<name>.zip.md5`` files; SNAP publishes no checksums.
ARCHIVES: dict[str, Archive] = {
    "ml-100k": Archive(_GROUPLENS + "ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": Archive(_GROUPLENS + "ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": Archive(_GROUPLENS + "ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "reviews_Electronics_5": Archive(_SNAP + "reviews_Electronics_5.json.gz"),
    "meta_Electronics": Archive(_SNAP + "meta_Electronics.json.gz"),
    "reviews_Books_5": Archive(_SNAP + "reviews_Books_5.json.gz"),
    "meta_Books": Archive(_SNAP + "meta_Books.json.gz"),
}
# The ratings file that tells that a MovieLens archive is already extracted.
MOVIELENS_VARIANTS = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-20m": "ratings.csv"}
AMAZON_CATEGORIES = ("Electronics", "Books")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name_or_url: str, root: str | Path, *, md5: str | None = None, timeout: float = 30
) -> Path:
    """Download a known archive (by name, see :data:`ARCHIVES`) or a URL into ``root``.

    A file already in ``root`` is kept when its md5 matches (or when no md5 is known);
    otherwise it is downloaded again. Nothing is left behind on failure.

    Args:
        name_or_url: A key of :data:`ARCHIVES` or a URL.
        root: Folder to put the file in (created if needed).
        md5: Expected md5; defaults to the registry's value for a known archive.
        timeout: Seconds to wait for the server at each step.

    Returns:
        The path of the downloaded file, named as in the URL.

    Raises:
        ConfigError: If ``name_or_url`` is neither a known archive nor a URL.
        DataError: If the server cannot be reached or the md5 does not match.
    """
    if name_or_url in ARCHIVES:
        url, md5 = ARCHIVES[name_or_url].url, md5 or ARCHIVES[name_or_url].md5
    elif "://" in name_or_url:
        url = name_or_url
    else:
        known = ", ".join(ARCHIVES)
        raise ConfigError(f"unknown archive {name_or_url!r}: give a URL or one of {known}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / PurePosixPath(urllib.parse.urlparse(url).path).name
    if target.is_file():
        if md5 is None:
            log.warning("%s exists and has no known checksum: using it unverified", target)
            return target
        if _md5(target) == md5.lower():
            return target
        log.warning("%s exists but its md5 is wrong: downloading it again", target)

    hint = "download it by hand and pass its path"
    try:
        digest = hashlib.md5(usedforsecurity=False)
        # A failed or mismatching download leaves neither a partial file nor a replaced target.
        with atomic_open(target) as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            actual = digest.hexdigest()
            if md5 is not None and actual != md5.lower():
                raise DataError(f"{target}: md5 mismatch for {url}: expected {md5}, got {actual}")
        if md5 is None:
            log.warning("%s: no known checksum, download unverified (md5 %s)", target, actual)
    except urllib.error.HTTPError as exc:
        raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {hint}") from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = " ".join(str(reason).split()) or type(exc).__name__
        raise DataError(f"cannot download {url}: no network ({reason}); {hint}") from exc
    return target


def extract(zip_path: str | Path, root: str | Path) -> list[Path]:
    """Extract a zip archive into ``root``, refusing members that would land outside it.

    Returns:
        The paths of the extracted members.

    Raises:
        DataError: If the archive is unreadable or a member has an absolute path or ``..``;
            nothing is extracted then.
    """
    zip_path, root = Path(zip_path), Path(root)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            for name in names:
                # PureWindowsPath splits on both separators and sees drive letters.
                parts = PureWindowsPath(name)
                if name.startswith(("/", "\\")) or parts.drive or ".." in parts.parts:
                    raise DataError(f"{zip_path}: refusing member {name!r} (absolute path or '..')")
            archive.extractall(root)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {zip_path}: {' '.join(str(exc).split())}") from exc
    return [root / name for name in names]


def fetch_movielens(variant: str, root: str | Path) -> Path:
    """Download and extract a MovieLens archive unless already there.

    Args:
        variant: ``ml-100k``, ``ml-1m`` or ``ml-20m``.
        root: Folder for the archive and its extracted folder.

    Returns:
        The extracted folder, ready for :func:`resemb_pl.data.readers.read_movielens`.

    Raises:
        ConfigError: On an unknown variant.
        DataError: As :func:`download` and :func:`extract`.
    """
    if variant not in MOVIELENS_VARIANTS:
        raise ConfigError(f"variant={variant!r} is not one of: {', '.join(MOVIELENS_VARIANTS)}")
    folder = Path(root) / variant
    if not (folder / MOVIELENS_VARIANTS[variant]).is_file():
        extract(download(variant, root), root)
    return folder


def fetch_amazon(category: str, root: str | Path) -> tuple[Path, Path]:
    """Download McAuley's 2014 5-core reviews and metadata of an Amazon category.

    Args:
        category: ``Electronics`` or ``Books``.
        root: Folder for the two files.

    Returns:
        ``(reviews path, meta path)``, ready for :func:`resemb_pl.data.readers.read_amazon`.

    Raises:
        ConfigError: On an unknown category.
        DataError: As :func:`download`.
    """
    if category not in AMAZON_CATEGORIES:
        raise ConfigError(f"category={category!r} is not one of: {', '.join(AMAZON_CATEGORIES)}")
    return download(f"reviews_{category}_5", root), download(f"meta_{category}", root)
