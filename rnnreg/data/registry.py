"""The data-set registry: built-in names -> loaders, and :func:`load_corpus`, the one entry point for ``data.source``.

``data.source`` names a registered data set (:func:`list_datasets`) or a ``.csv``/``.tsv``/``.jsonl`` file; either
becomes a :class:`~rnnreg.data.corpus.Corpus` of ``(text, label_id)`` pairs split train/val/test. The registry sits
above the sources: it imports them, none of them imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rnnreg.config import DataConfig
from rnnreg.data.corpus import Corpus
from rnnreg.data.sources.files import load_file
from rnnreg.data.sources.synthetic import SYNTHETIC_SIZE, load_synthetic, load_toy
from rnnreg.data.sources.vader import load_rated


@dataclass(frozen=True)
class DatasetInfo:
    description: str  # one line, shown by `rnnreg datasets`
    load: Callable[[DataConfig], Corpus]


DATASETS: dict[str, DatasetInfo] = {
    "movies": DatasetInfo(
        "Rotten Tomatoes review sentences (10,605, Pang & Lee) with mean human ratings; sign -> binary sentiment",
        partial(load_rated, "movies"),
    ),
    "tweets": DatasetInfo(
        "tweets (4,200) with mean human ratings; sign -> binary sentiment", partial(load_rated, "tweets")
    ),
    "amazon": DatasetInfo(
        "Amazon product-review sentences (3,708) with mean human ratings; sign -> binary sentiment",
        partial(load_rated, "amazon"),
    ),
    "nyt": DatasetInfo(
        "New York Times editorial sentences (5,190) with mean human ratings; sign -> binary sentiment",
        partial(load_rated, "nyt"),
    ),
    "toy": DatasetInfo(
        "the notebook's 12 sentences with its own 9/3 split (ignores data.val_frac, test_frac, split_seed)", load_toy
    ),
    "synthetic": DatasetInfo(
        f"{SYNTHETIC_SIZE:,} generated texts: which marker group (x*/y*) occurs more often; fast, learnable",
        load_synthetic,
    ),
}


def list_datasets() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every registered data set."""
    return [(name, info.description) for name, info in DATASETS.items()]


def load_corpus(cfg: DataConfig) -> Corpus:
    """Load ``cfg.source``, a registered name or a .csv/.tsv/.jsonl path, split into train/val/test.

    Registered names win over files of the same name (write ``./movies`` for such a file). The real sentiment
    sets are fetched once (see :func:`~rnnreg.data.sources.vader.fetch_vader`) and read offline afterwards.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"load_corpus wants a DataConfig (got {type(cfg).__name__}); e.g. DataConfig(source='toy')")
    info = DATASETS.get(cfg.source)
    if info is not None:
        return info.load(cfg)
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise ValueError(
            f"data.source={cfg.source!r} is neither a data set ({', '.join(DATASETS)}) nor an existing file; "
            "use one of those names or the path of a .csv, .tsv or .jsonl file"
        )
    if not path.is_file():
        raise ValueError(f"data.source={cfg.source!r} is a folder; point it at a .csv, .tsv or .jsonl file")
    return load_file(path, cfg)
