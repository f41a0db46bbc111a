"""Where texts come from, one module each: ``vader`` (the rated snippets, fetched once), ``files`` (user
.csv/.tsv/.jsonl) and ``synthetic`` (the notebook's toy corpus and a generated counting task).

Each gives a loader ``DataConfig -> Corpus``; :mod:`rnnreg.data.registry` names them.
"""
