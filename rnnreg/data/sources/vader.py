"""Human-rated snippets from the vaderSentiment 3.3.2 source distribution (MIT licence): movies, tweets, amazon, nyt.

:func:`fetch_vader` downloads the sdist once with pip (its SHA-256 pinned), extracts the four snippet files into
:func:`cache_dir` with a checksum manifest, and reads them offline afterwards; a damaged cache is rebuilt from the
archive. :func:`load_rated` turns one file into a binary-sentiment :class:`~rnnreg.data.corpus.Corpus`.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

from rnnreg.config import DataConfig
from rnnreg.data.corpus import Corpus, split_corpus
from rnnreg.data.sources.files import decode_utf8
from rnnreg.data.text import tokenize

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_DIR = "hutto_ICWSM_2014"  # the inner archive's folder; also the folder we extract into in the cache
VADER_FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
_PIP_TIMEOUT_S = 300


class DatasetUnavailableError(RuntimeError):
    """A built-in data set could not be fetched or verified; the message says how to provide it by hand."""


def cache_dir() -> Path:
    """Where downloads live: ``$RNNREG_CACHE`` if set, else ``~/.cache/rnnreg``."""
    return Path(os.environ.get("RNNREG_CACHE") or Path.home() / ".cache" / "rnnreg").expanduser()


def fetch_vader(cache: Path | None = None) -> Path:
    """The folder holding the four rated-snippet files, fetched and extracted on first use, offline afterwards.

    An sdist already in the cache is used as is (after its SHA-256 check), so it can be placed there by hand.
    """
    cache = cache_dir() if cache is None else cache
    target = cache / _VADER_DIR
    damage = _cache_damage(target)
    if damage is None:
        return target
    if damage:  # never read a damaged cache: rebuild it from the (checksummed) archive
        warnings.warn(f"{target} is damaged ({damage}); rebuilding it from {VADER_SDIST}", stacklevel=2)
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / VADER_SDIST
    if not sdist.is_file():
        _download_vader(cache)
    _check_sha256(sdist, VADER_SDIST_SHA256)
    _extract_vader(sdist, target)
    return target


_MANIFEST = "SHA256SUMS.json"  # written beside the extracted files; checked on every use


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_damage(target: Path) -> str | None:
    """None for a sound extracted cache; '' when there is none (or one from before manifests); else what is wrong."""
    try:
        manifest = json.loads((target / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "" if not target.exists() or not (target / _MANIFEST).exists() else f"{_MANIFEST} is unreadable"
    for name in VADER_FILES.values():
        path = target / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(manifest, dict) or _sha256(path) != manifest.get(name):
            return f"{name} does not match its checksum"
    return None


def _fetch_help(cache: Path) -> str:
    return (
        f"the rated snippets come from the vaderSentiment 3.3.2 source archive, fetched once with pip (this needs "
        f"access to the Python package index once; later runs read {cache} offline). Without network: get "
        f"{VADER_SDIST} (sha256 {VADER_SDIST_SHA256}) on another machine with `pip download --no-deps "
        f"--no-binary :all: vaderSentiment==3.3.2` and put it in {cache} (or set RNNREG_CACHE to its folder)"
    )


def _download_vader(cache: Path) -> None:
    """Save the sdist into ``cache`` with pip; raises DatasetUnavailableError when pip cannot."""
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        # Pinning the hash makes pip itself refuse any other file, before it runs anything from it.
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"vaderSentiment==3.3.2 --hash=sha256:{VADER_SDIST_SHA256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
        cmd += ["--disable-pip-version-check", "-r", str(requirements), "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            why = f"pip did not finish within {_PIP_TIMEOUT_S} s"
        except OSError as e:
            why = f"could not run pip ({e})"
        else:
            errors = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            why = f"pip exited with status {proc.returncode}: {' '.join(errors[-3:])}" if proc.returncode else ""
        saved = Path(tmp) / VADER_SDIST
        if not why and not saved.is_file():
            why = f"pip reported success but saved no {VADER_SDIST}"
        if why:
            raise DatasetUnavailableError(f"could not download {VADER_SDIST}: {why}; {_fetch_help(cache)}")
        os.replace(saved, cache / VADER_SDIST)  # same folder tree: an atomic rename, never a half-written file


def _check_sha256(path: Path, expected: str) -> None:
    digest = _sha256(path)
    if digest != expected:
        raise DatasetUnavailableError(
            f"{path} has sha256 {digest}, expected {expected} (the vaderSentiment 3.3.2 source archive): it is "
            "corrupt or another release; delete it and run again to fetch it anew"
        )


def _extract_vader(sdist: Path, target: Path) -> None:
    """Copy the four snippet files out of the archive inside ``sdist``; ``target`` appears complete or not at all."""
    try:
        with tarfile.open(sdist, "r:gz") as outer:
            inner_file = outer.extractfile(_VADER_INNER)
            if inner_file is None:
                raise KeyError(_VADER_INNER)
            inner_bytes = inner_file.read()
        files = {}
        with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
            for name in VADER_FILES.values():
                member = inner.extractfile(f"{_VADER_DIR}/{name}")
                if member is None:
                    raise KeyError(name)
                files[name] = member.read()
    except (tarfile.TarError, KeyError, EOFError, OSError) as e:
        raise DatasetUnavailableError(
            f"{sdist} does not hold the expected rated-snippet files ({e!r}); delete it and run again"
        ) from None
    # Write into a temporary sibling, then rename: an interrupted run never leaves a half-filled folder behind.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        sums = {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}
        (tmp / _MANIFEST).write_text(json.dumps(sums, indent=1) + "\n", encoding="utf-8")
        if target.exists():  # incomplete (a file went missing): replace it
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if _cache_damage(target) is not None:
                raise  # not a concurrent run that finished first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clean_snippet(text: str) -> str:
    # The files escape markup as HTML (&amp;, &lt;) and write a double quote as two apostrophes (''Conan'').
    return html.unescape(text).replace("''", '"').strip()


def read_rated_snippets(path: Path) -> list[tuple[str, float]]:
    """``(text, mean rating)`` pairs of one ``id<TAB>rating<TAB>text`` file (CRLF line ends, UTF-8)."""
    text = decode_utf8(path.read_bytes(), path)
    rows = []
    # split("\n"), not splitlines(): the latter would also cut texts at form feeds or U+2028.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"{path}: line {lineno} is not id<TAB>rating<TAB>text (got {line[:60]!r})")
        try:
            rating = float(parts[1])
        except ValueError:
            raise ValueError(f"{path}: line {lineno} has rating {parts[1]!r}, not a number") from None
        rows.append((_clean_snippet(parts[2]), rating))
    return rows


def load_rated(name: str, cfg: DataConfig) -> Corpus:
    """The rated snippets ``name`` (a key of :data:`VADER_FILES`) as positive/negative texts, split by ``cfg``."""
    rows = read_rated_snippets(fetch_vader() / VADER_FILES[name])
    # Binary sentiment from the sign of the mean human rating (-4..4); an exact 0 is neither, so it is dropped.
    kept = [(t, "positive" if r > 0 else "negative") for t, r in rows if r != 0 and tokenize(t)]
    texts, labels = [t for t, _ in kept], [y for _, y in kept]
    return split_corpus(name, texts, labels, cfg, column="rating", dropped=len(rows) - len(kept))
