"""Text data, one topic a module; from rnnreg this package imports only ``rnnreg.batch`` and ``rnnreg.config``.

- :mod:`~rnnreg.data.text`: ``tokenize``, ``Vocab`` (PAD = 0, UNK = 1), label ids, ``encode``.
- :mod:`~rnnreg.data.corpus`: ``Corpus`` and ``Example``, ``stratified_split``, ``build_vocab`` (training split only).
- :mod:`~rnnreg.data.sources`: ``vader`` (rated snippets: download, checksums, cache), ``files`` (.csv/.tsv/.jsonl),
  ``synthetic`` (toy and synthetic corpora).
- :mod:`~rnnreg.data.registry`: ``DATASETS``, ``list_datasets`` and ``load_corpus`` (a registered name or a file).

``PAD_ID``, ``Batch``, ``collate`` and the batch order live in :mod:`rnnreg.batch`; they are re-exported here so
``from rnnreg.data import Batch`` keeps working. The training step, the model and ``rnnreg.testing`` import
:mod:`rnnreg.batch`, never this package (and so never the downloader).
"""

from rnnreg.batch import BUCKET_WINDOW_BATCHES, PAD_ID, Batch, batch_indices, collate, iterate_batches
from rnnreg.config import DataConfig  # rnnreg.data.DataConfig worked before the split; it still does
from rnnreg.data.corpus import Corpus, Example, build_vocab, stratified_split
from rnnreg.data.registry import DATASETS, DatasetInfo, list_datasets, load_corpus
from rnnreg.data.sources.synthetic import (
    SYNTHETIC_DISTRACTORS,
    SYNTHETIC_GROUPS,
    SYNTHETIC_MARKERS,
    SYNTHETIC_SIZE,
    TOY_SENTENCES,
    make_synthetic,
)
from rnnreg.data.sources.vader import (
    VADER_FILES,
    VADER_SDIST,
    VADER_SDIST_SHA256,
    DatasetUnavailableError,
    cache_dir,
    fetch_vader,
    read_rated_snippets,
)
from rnnreg.data.text import PAD_TOKEN, UNK_ID, UNK_TOKEN, Vocab, encode, encode_labels, tokenize

__all__ = [
    "BUCKET_WINDOW_BATCHES",
    "DATASETS",
    "PAD_ID",
    "PAD_TOKEN",
    "SYNTHETIC_DISTRACTORS",
    "SYNTHETIC_GROUPS",
    "SYNTHETIC_MARKERS",
    "SYNTHETIC_SIZE",
    "TOY_SENTENCES",
    "UNK_ID",
    "UNK_TOKEN",
    "VADER_FILES",
    "VADER_SDIST",
    "VADER_SDIST_SHA256",
    "Batch",
    "Corpus",
    "DataConfig",
    "DatasetInfo",
    "DatasetUnavailableError",
    "Example",
    "Vocab",
    "batch_indices",
    "build_vocab",
    "cache_dir",
    "collate",
    "encode",
    "encode_labels",
    "fetch_vader",
    "iterate_batches",
    "list_datasets",
    "load_corpus",
    "make_synthetic",
    "read_rated_snippets",
    "stratified_split",
    "tokenize",
]
