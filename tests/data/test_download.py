"""Downloads, offline: files are served through ``file://`` URLs or a patched ``urlopen``."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import urllib.error
import zipfile
from pathlib import Path

import pytest

from resemb_pl.data import download as dl
from resemb_pl.data.readers import read_movielens
from resemb_pl.errors import ConfigError, DataError

PAYLOAD = b"0123456789" * 250_000  # several read chunks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def serve(tmp_path: Path, name: str, data: bytes) -> str:
    """Put ``data`` in a source folder and return its ``file://`` URL."""
    source = tmp_path / "server"
    source.mkdir(exist_ok=True)
    (source / name).write_bytes(data)
    return (source / name).as_uri()


def no_urlopen(*args, **kwargs):
    raise AssertionError("urlopen must not be called")


def test_registry():
    for name in (
        "ml-100k",
        "ml-1m",
        "ml-20m",
        "reviews_Electronics_5",
        "meta_Electronics",
        "reviews_Books_5",
        "meta_Books",
    ):
        archive = dl.ARCHIVES[name]
        assert archive.url.startswith(("https://", "http://"))
        assert name in archive.url
        assert archive.md5 is None or re.fullmatch(r"[0-9a-f]{32}", archive.md5)
    assert dl.ARCHIVES["ml-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
    assert dl.ARCHIVES["ml-1m"].url == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    with pytest.raises(ConfigError, match="unknown archive 'ml-5m'"):
        dl.download("ml-5m", "unused")


def test_download_verifies_md5(tmp_path):
    url = serve(tmp_path, "data.bin", PAYLOAD)
    root = tmp_path / "root"
    path = dl.download(url, root, md5=PAYLOAD_MD5.upper())
    assert path == root / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in root.iterdir()) == ["data.bin"]


def test_download_md5_mismatch_leaves_nothing(tmp_path):
    url = serve(tmp_path, "data.bin", PAYLOAD)
    root = tmp_path / "root"
    with pytest.raises(
        DataError,
        match=rf"data\.bin: md5 mismatch for {re.escape(url)}: "
        rf"expected 0+, got {PAYLOAD_MD5}$",
    ):
        dl.download(url, root, md5="0" * 32)
    assert list(root.iterdir()) == []


def test_download_keeps_a_good_file_and_replaces_a_bad_one(tmp_path, monkeypatch, caplog):
    url = serve(tmp_path, "data.bin", PAYLOAD)
    root = tmp_path / "root"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    monkeypatch.setattr(dl.urllib.request, "urlopen", no_urlopen)
    assert dl.download(url, root, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    with caplog.at_level(logging.WARNING, logger="resemb_pl.data.download"):
        assert dl.download(url, root).read_bytes() == PAYLOAD  # no checksum: used as is
    assert "no known checksum: using it unverified" in caplog.text
    monkeypatch.undo()
    (root / "data.bin").write_bytes(b"stale")
    assert dl.download(url, root, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD


def test_download_without_checksum_logs_unverified(tmp_path, caplog):
    url = serve(tmp_path, "data.bin", PAYLOAD)
    with caplog.at_level(logging.WARNING, logger="resemb_pl.data.download"):
        dl.download(url, tmp_path / "root")
    assert f"no known checksum, download unverified (md5 {PAYLOAD_MD5})" in caplog.text


def test_download_no_network(tmp_path, monkeypatch):
    def offline(url, timeout):
        assert timeout == 5
        raise urllib.error.URLError(OSError(-3, "Temporary failure\nin name resolution"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        dl.download("ml-1m", tmp_path, timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "cannot download https://files.grouplens.org/datasets/movielens/ml-1m.zip: no network ("
    )
    assert message.endswith("in name resolution); download it by hand and pass its path")
    assert list(tmp_path.iterdir()) == []


def test_download_http_error(tmp_path, monkeypatch):
    def not_found(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(dl.urllib.request, "urlopen", not_found)
    with pytest.raises(DataError, match=r"ml-20m\.zip: HTTP 404 Not Found; download it by hand"):
        dl.download("ml-20m", tmp_path)
    assert list(tmp_path.iterdir()) == []


class Broken(io.BytesIO):
    """A response that dies after its first chunk."""

    def read(self, size=-1):
        if self.tell():
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(size)


def test_download_interrupted_removes_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda url, timeout: Broken(PAYLOAD))
    with pytest.raises(DataError, match=r"no network \(\[Errno 104\] Connection reset by peer\)"):
        dl.download("https://example.org/x/data.bin", tmp_path)
    assert list(tmp_path.iterdir()) == []


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_extract(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/a.txt": "A", "top/sub/b.txt": "B"})
    paths = dl.extract(archive, tmp_path / "out")
    assert paths == [tmp_path / "out" / "top" / "a.txt", tmp_path / "out" / "top" / "sub" / "b.txt"]
    assert (tmp_path / "out" / "top" / "sub" / "b.txt").read_text() == "B"
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cannot read .*bad\.zip: File is not a zip file"):
        dl.extract(tmp_path / "bad.zip", tmp_path / "out")


@pytest.mark.parametrize(
    "name", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt", "C:/evil.txt"]
)
def test_extract_refuses_path_traversal(tmp_path, name):
    archive = make_zip(tmp_path / "t.zip", {"fine.txt": "ok", name: "evil"})
    with pytest.raises(DataError, match=rf"t\.zip: refusing member {re.escape(repr(name))} "):
        dl.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing was extracted


ML100K = {
    "ml-100k/u.data": "1\t20\t4\t100\n2\t10\t3\t50\n1\t10\t5\t90\n",
    "ml-100k/u.item": (
        "10|A (1995)|01-Jan-1995||http://x|0|1|0\n20|B (1995)|01-Jan-1995||http://x|0|0|1\n"
    ),
    "ml-100k/u.genre": "unknown|0\nAction|1\nDrama|2\n\n",
}


def test_fetch_movielens(tmp_path, monkeypatch):
    data = make_zip(tmp_path / "ml-100k.zip", ML100K).read_bytes()
    url = serve(tmp_path, "ml-100k.zip", data)
    monkeypatch.setitem(dl.ARCHIVES, "ml-100k", dl.Archive(url, hashlib.md5(data).hexdigest()))
    root = tmp_path / "root"
    folder = dl.fetch_movielens("ml-100k", root)
    assert folder == root / "ml-100k"
    ratings = read_movielens(folder)
    assert ratings.num_events == 3
    assert ratings.category_vocab.tolist() == ["Action", "Drama"]
    monkeypatch.setattr(dl.urllib.request, "urlopen", no_urlopen)
    assert dl.fetch_movielens("ml-100k", root) == folder  # already there: no download
    with pytest.raises(ConfigError, match="variant='ml-10m' is not one of: ml-100k, ml-1m, ml-20m"):
        dl.fetch_movielens("ml-10m", root)


def test_fetch_amazon(tmp_path, monkeypatch):
    for name in ("reviews_Electronics_5", "meta_Electronics"):
        url = serve(tmp_path, f"{name}.json.gz", name.encode())
        monkeypatch.setitem(dl.ARCHIVES, name, dl.Archive(url))
    reviews, meta = dl.fetch_amazon("Electronics", tmp_path / "root")
    assert reviews.read_bytes() == b"reviews_Electronics_5"
    assert meta == tmp_path / "root" / "meta_Electronics.json.gz"
    with pytest.raises(ConfigError, match="category='Music' is not one of: Electronics, Books"):
        dl.fetch_amazon("Music", tmp_path)
