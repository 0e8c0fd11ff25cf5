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

from anyloss import (
    classes,
    classification,
    ctc,
    embedding,
    linear,
    margin,
    probabilistic,
    regression,
)
from anyloss._registry import fast_path_level, fast_paths, fast_paths_enabled, set_fast_paths
from anyloss._threads import get_threads, set_threads, threads
from anyloss._version import __version__
from anyloss.classes import *  # noqa: F403
from anyloss.classification import *  # noqa: F403
from anyloss.ctc import *  # noqa: F403
from anyloss.embedding import *  # noqa: F403
from anyloss.linear import *  # noqa: F403
from anyloss.margin import *  # noqa: F403
from anyloss.probabilistic import *  # noqa: F403
from anyloss.regression import *  # noqa: F403

__all__ = sorted(
    [
        *regression.__all__,
        *classification.__all__,
        *margin.__all__,
        *embedding.__all__,
        *probabilistic.__all__,
        *ctc.__all__,
        *linear.__all__,
        "fast_path_level",
        "fast_paths",
        "fast_paths_enabled",
        "get_threads",
        "set_fast_paths",
        "set_threads",
        "threads",
        *classes.__all__,
    ]
)
