"""lazyrich.models: the model zoo (plain ``torch.nn`` modules and seeded factories).

Axes: images ``(n, C, H, W)``, vectors ``(n, d)``, tokens ``(n, L)`` (long);
outputs ``(n, c)``.  See :mod:`lazyrich.models.zoo`.
"""

from lazyrich.models import zoo
from lazyrich.models.zoo import *  # noqa: F401,F403 -- the zoo's public names, listed once in zoo.__all__

from lazyrich.models.rebalance import layer_balance, rebalance, trainable_layers
from lazyrich.models import teacher_student  # (tau, delta) students of Kunin et al. Fig. 1

__all__ = list(zoo.__all__) + ["rebalance", "layer_balance", "trainable_layers", "teacher_student"]
