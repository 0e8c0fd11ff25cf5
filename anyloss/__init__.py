"""anyloss: every ``torch.nn`` loss, written once against the Python array API standard.

The functions take arrays of any array-API library (NumPy, CuPy, PyTorch, JAX,
Dask, array-api-strict) and return an array of the same library, device and
floating dtype. Their names, signatures, defaults and semantics are those of
``torch.nn.functional``. Each family module lists its public functions in its
``__all__``; this package re-exports them.

>>> import numpy as np, anyloss
>>> float(anyloss.mse_loss(np.asarray([1.0, 2.0]), np.asarray([1.0, 4.0])))
2.0
"""

from anyloss import classification, ctc, distributions, embedding, losses, margin, regression
from anyloss._dispatch import fast_paths, fast_paths_enabled, set_fast_paths
from anyloss.classification import *  # noqa: F403
from anyloss.ctc import *  # noqa: F403
from anyloss.distributions import *  # noqa: F403
from anyloss.embedding import *  # noqa: F403
from anyloss.losses import *  # noqa: F403
from anyloss.margin import *  # noqa: F403
from anyloss.regression import *  # noqa: F403

__version__ = "0.1.0"

__all__ = sorted(
    [
        *regression.__all__,
        *classification.__all__,
        *margin.__all__,
        *embedding.__all__,
        *distributions.__all__,
        *ctc.__all__,
        "fast_paths",
        "fast_paths_enabled",
        "set_fast_paths",
        *losses.__all__,
    ]
)
