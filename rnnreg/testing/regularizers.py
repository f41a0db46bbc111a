"""The layer and parameter-group checks under their earlier module name; they live in
:mod:`rnnreg.testing.layer_checks` and :mod:`rnnreg.testing.optim_checks`."""

from rnnreg.testing.layer_checks import check_embedding_dropout, check_weight_drop
from rnnreg.testing.optim_checks import check_decay_groups

__all__ = ["check_decay_groups", "check_embedding_dropout", "check_weight_drop"]
