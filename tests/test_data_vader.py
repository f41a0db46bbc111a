"""rnnreg.data.sources.vader: the rated snippets on a fabricated archive: parsing, fetch once, checksums, pip errors."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from rnnreg.config import DataConfig
from rnnreg.data.registry import load_corpus
from rnnreg.data.sources import vader
from rnnreg.data.sources.vader import DatasetUnavailableError

# Quirks of the real files: CRLF line ends, no newline after the last line, HTML entities, '' for a double quote,
# UTF-8 accents and a typographic apostrophe, exact-0 ratings (dropped).
FAKE_SNIPPETS = (
    "1\t2.5\tA ''great'' film &amp; fun\r\n"
    "2\t-1.25\tDull and slow\r\n"
    "3\t0\tNeutral words\r\n"
    "4\t0.4\tCaf\u00e9\u2019s charm\r\n"
    "5\t-3\tAwful &lt;3\r\n"
    "6\t1\tFine"
).encode()


def _make_sdist(path: Path, files: dict[str, bytes]) -> Path:
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    return path


@pytest.fixture
def fake_vader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A fabricated sdist, its hash installed as the expected one, and a counting stand-in for the pip fetch."""
    sdist = _make_sdist(
        tmp_path / "vaderSentiment-3.3.2.tar.gz", dict.fromkeys(vader.VADER_FILES.values(), FAKE_SNIPPETS)
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("RNNREG_CACHE", str(cache))
    monkeypatch.setattr(vader, "VADER_SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    calls: list[Path] = []

    def download(into: Path) -> None:
        calls.append(into)
        (into / vader.VADER_SDIST).write_bytes(sdist.read_bytes())

    monkeypatch.setattr(vader, "_download_vader", download)
    return {"sdist": sdist, "cache": cache, "calls": calls}


def test_rated_snippets_parse_quirks_and_drop_neutral(fake_vader: dict[str, object]) -> None:
    corpus = load_corpus(DataConfig(source="movies", val_frac=0.0, test_frac=0.0))
    assert corpus.label_names == ["negative", "positive"]
    assert corpus.dropped == 1
    assert sorted(corpus.train) == sorted(
        [
            ('A "great" film & fun', 1),
            ("Dull and slow", 0),
            ("Caf\u00e9\u2019s charm", 1),
            ("Awful <3", 0),
            ("Fine", 1),
        ]
    )


def test_fetch_happens_once_then_reads_offline(fake_vader: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = DataConfig(source="tweets", val_frac=0.0, test_frac=0.0)
    first = load_corpus(cfg)
    assert len(fake_vader["calls"]) == 1  # type: ignore[arg-type]

    def no_network(into: Path) -> None:
        raise AssertionError("fetched again although the cache holds the data")

    monkeypatch.setattr(vader, "_download_vader", no_network)
    assert load_corpus(cfg) == first
    cache = fake_vader["cache"]
    assert isinstance(cache, Path)
    assert sorted(p.name for p in cache.iterdir()) == ["hutto_ICWSM_2014", "vaderSentiment-3.3.2.tar.gz"]  # no temps


def test_an_sdist_placed_by_hand_is_used_without_download(fake_vader: dict[str, object]) -> None:
    cache, sdist = fake_vader["cache"], fake_vader["sdist"]
    assert isinstance(cache, Path) and isinstance(sdist, Path)
    cache.mkdir()
    (cache / vader.VADER_SDIST).write_bytes(sdist.read_bytes())
    assert len(load_corpus(DataConfig(source="nyt", val_frac=0.0, test_frac=0.0)).train) == 5
    assert fake_vader["calls"] == []


def test_sha_mismatch_raises_and_extracts_nothing(
    fake_vader: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vader, "VADER_SDIST_SHA256", "0" * 64)
    with pytest.raises(DatasetUnavailableError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}.*delete it") as info:
        load_corpus(DataConfig(source="amazon"))
    assert "\n" not in str(info.value)
    cache = fake_vader["cache"]
    assert isinstance(cache, Path)
    assert not (cache / "hutto_ICWSM_2014").exists()


def test_an_archive_without_the_snippets_is_refused(tmp_path: Path) -> None:
    sdist = _make_sdist(tmp_path / "x.tar.gz", {"tweets_GroundTruth.txt": FAKE_SNIPPETS})  # three files missing
    with pytest.raises(DatasetUnavailableError, match="does not hold the expected"):
        vader._extract_vader(sdist, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _fake_run(result: Callable[[list[str]], subprocess.CompletedProcess[str]]) -> Callable[..., object]:
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return result(cmd)

    return run


def test_pip_failure_says_it_needs_the_index_once_or_a_file_by_hand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def failing(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        requirements = Path(cmd[cmd.index("-r") + 1]).read_text()
        assert f"--hash=sha256:{vader.VADER_SDIST_SHA256}" in requirements  # pip itself checks the archive
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")

    monkeypatch.setattr(vader.subprocess, "run", _fake_run(failing))
    with pytest.raises(DatasetUnavailableError) as info:
        vader.fetch_vader(tmp_path)
    message = str(info.value)
    assert "status 1" in message and "No matching distribution found" in message
    assert "package index once" in message and vader.VADER_SDIST in message and str(tmp_path) in message
    assert seen[0][:3] == [sys.executable, "-m", "pip"] and "--no-binary" in seen[0] and ":all:" in seen[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the temporary download folder is gone


def test_pip_timeout_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def hangs(cmd: list[str], **kwargs: object) -> object:
        raise subprocess.TimeoutExpired(cmd, 300)

    monkeypatch.setattr(vader.subprocess, "run", hangs)
    with pytest.raises(DatasetUnavailableError, match=r"did not finish within 300 s.*package index once"):
        vader.fetch_vader(tmp_path)


@pytest.mark.slow
def test_real_download_gives_the_published_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Needs network once. Expected figures were counted with awk on the extracted files, independently of rnnreg:
    # (rows with rating > 0, rows with rating < 0); the exact-0 rows are dropped.
    monkeypatch.setenv("RNNREG_CACHE", str(tmp_path))
    expected = {
        "movies": (5242, 5326, 37),
        "tweets": (2897, 1299, 4),
        "amazon": (2128, 1482, 98),
        "nyt": (2204, 2742, 244),
    }
    for name, (pos, neg, zero) in expected.items():
        corpus = load_corpus(DataConfig(source=name))
        counts = Counter(y for split in (corpus.train, corpus.val, corpus.test) for _, y in split)
        assert (counts[1], counts[0], corpus.dropped) == (pos, neg, zero), name
