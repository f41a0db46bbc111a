"""rnnreg.data.registry and the package surface: the built-in names, unknown sources, every name kept importable."""

from __future__ import annotations

from pathlib import Path

import pytest

import rnnreg.batch
import rnnreg.data
import rnnreg.data.sources.vader
from rnnreg.config import DataConfig
from rnnreg.data import list_datasets, load_corpus


def test_registry_lists_every_builtin_with_a_one_line_description() -> None:
    listed = dict(list_datasets())
    assert set(listed) == {"toy", "movies", "tweets", "amazon", "nyt", "synthetic"}
    assert DataConfig().source in listed
    assert all(desc.strip() and "\n" not in desc for desc in listed.values())


def test_unknown_source_lists_the_dataset_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.source='moviez' is neither a data set \(movies, .*toy.*synthetic"):
        load_corpus(DataConfig(source="moviez"))
    with pytest.raises(ValueError, match=r"is a folder"):
        load_corpus(DataConfig(source=str(tmp_path)))


# The public names of rnnreg/data.py before it became a package (issue 17), written out by hand: callers import them
# from rnnreg.data, so each must still be there, the very object its new home holds.
NAMES_BEFORE_THE_SPLIT = (
    "BUCKET_WINDOW_BATCHES",
    "PAD_ID",
    "Batch",
    "batch_indices",
    "collate",
    "iterate_batches",
    "DataConfig",
    "UNK_ID",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "Example",
    "tokenize",
    "Vocab",
    "encode_labels",
    "encode",
    "Corpus",
    "stratified_split",
    "build_vocab",
    "TOY_SENTENCES",
    "SYNTHETIC_GROUPS",
    "SYNTHETIC_MARKERS",
    "SYNTHETIC_DISTRACTORS",
    "SYNTHETIC_SIZE",
    "make_synthetic",
    "VADER_SDIST",
    "VADER_SDIST_SHA256",
    "VADER_FILES",
    "DatasetUnavailableError",
    "cache_dir",
    "fetch_vader",
    "read_rated_snippets",
    "DatasetInfo",
    "DATASETS",
    "list_datasets",
    "load_corpus",
)


def test_every_name_of_the_old_module_is_still_importable_from_rnnreg_data() -> None:
    missing = [name for name in NAMES_BEFORE_THE_SPLIT if not hasattr(rnnreg.data, name)]
    assert missing == []
    assert sorted(rnnreg.data.__all__) == sorted(NAMES_BEFORE_THE_SPLIT)
    assert rnnreg.data.Batch is rnnreg.batch.Batch and rnnreg.data.collate is rnnreg.batch.collate
    assert rnnreg.data.fetch_vader is rnnreg.data.sources.vader.fetch_vader
    assert rnnreg.data.Vocab is rnnreg.data.text.Vocab and rnnreg.data.Corpus is rnnreg.data.corpus.Corpus
