"""The ``torch.nn``-style loss classes: thin holders of options that call the functions.

Each class has the constructor of its ``torch.nn`` namesake (same arguments,
positional order and defaults, the legacy ``size_average``/``reduce``
included) and a ``forward`` that calls the matching :mod:`anyloss` function
with the stored options. Instances are callable, pickle, and print their
options::

    >>> import numpy as np, anyloss
    >>> loss = anyloss.HuberLoss(delta=0.5)
    >>> loss
    HuberLoss(delta=0.5)
    >>> float(loss(np.asarray([2.0]), np.asarray([0.0])))
    0.875

Array options (``weight``, ``pos_weight``) are kept as given, arrays of any
library; they must come from the library of the arrays the loss is called on.

A class is declared by three class attributes: ``function`` (the name of the
function in :mod:`anyloss`), ``options`` (constructor parameters and defaults,
in torch's order; :data:`KEYWORD_ONLY` marks the start of keyword-only ones)
and ``inputs`` (the names of ``forward``'s arguments).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

from anyloss import _reduction
from anyloss._array import Array, device, namespace, uniform
from anyloss._validate import warn

__all__ = [
    "L1Loss",
    "MSELoss",
    "HuberLoss",
    "SmoothL1Loss",
    "SoftMarginLoss",
    "HingeEmbeddingLoss",
    "MarginRankingLoss",
    "KLDivLoss",
    "PoissonNLLLoss",
    "GaussianNLLLoss",
    "NLLLoss",
    "NLLLoss2d",
    "CrossEntropyLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "MultiLabelSoftMarginLoss",
    "MultiLabelMarginLoss",
    "MultiMarginLoss",
    "CosineEmbeddingLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "CTCLoss",
    "LinearCrossEntropyLoss",
]

#: Marks where keyword-only constructor parameters begin in ``options``.
KEYWORD_ONLY = ("*", None)

_LEGACY = (("size_average", None), ("reduce", None))
_MEAN = ("reduction", "mean")


class Loss:
    """Base class: binds constructor arguments, resolves legacy reductions, calls the function."""

    function: ClassVar[str]
    options: ClassVar[tuple[tuple[str, Any], ...]] = (*_LEGACY, _MEAN)
    inputs: ClassVar[tuple[str, ...]] = ("input", "target")
    _init_signature: ClassVar[inspect.Signature]
    __signature__: ClassVar[inspect.Signature]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        kind: inspect._ParameterKind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        for name, default in cls.options:
            if (name, default) == KEYWORD_ONLY:
                kind = inspect.Parameter.KEYWORD_ONLY
                continue
            params.append(inspect.Parameter(name, kind, default=default))
        cls._init_signature = inspect.Signature(params)
        # What inspect.signature(cls) and help(cls) show: torch's constructor.
        cls.__signature__ = cls._init_signature.replace(parameters=params[1:])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = self._init_signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        size_average = values.pop("size_average", None)
        reduce = values.pop("reduce", None)
        if size_average is not None or reduce is not None:
            values["reduction"] = _reduction.legacy_reduction(size_average, reduce, stacklevel=3)
        for name, value in values.items():
            setattr(self, name, value)

    def _stored_options(self) -> dict[str, Any]:
        # The class's table (an instance may hold an option named "options" itself).
        names = [n for n, _ in type(self).options if n not in ("size_average", "reduce", "*")]
        return {name: getattr(self, name) for name in names}

    def forward(self, *args: Array) -> Array:
        """Apply the loss to ``args`` (named as in :attr:`inputs`) with the stored options."""
        import anyloss

        if len(args) != len(self.inputs):
            raise TypeError(
                f"{type(self).__name__}.forward() takes {len(self.inputs)} arrays "
                f"({', '.join(self.inputs)}), got {len(args)}"
            )
        return getattr(anyloss, self.function)(*args, **self._stored_options())

    def __call__(self, *args: Array) -> Array:
        return self.forward(*args)

    def __repr__(self) -> str:
        defaults = dict(type(self).options)
        shown = [
            f"{name}={_describe(value)}"
            for name, value in self._stored_options().items()
            if not _is_default(value, defaults.get(name))
        ]
        return f"{type(self).__name__}({', '.join(shown)})"


def _is_default(value: Any, default: Any) -> bool:
    return value is default or (
        isinstance(value, (bool, int, float, str)) and type(value) is type(default)
        and value == default
    )


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        library = type(value).__module__.split(".")[0]
        return f"<{library} array shape={tuple(value.shape)} dtype={value.dtype}>"
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return repr(value)


class L1Loss(Loss):
    """Mean absolute error; see :func:`anyloss.l1_loss`."""

    function = "l1_loss"


class MSELoss(Loss):
    """Mean squared error; see :func:`anyloss.mse_loss`."""

    function = "mse_loss"


class HuberLoss(Loss):
    """Huber loss with threshold ``delta``; see :func:`anyloss.huber_loss`."""

    function = "huber_loss"
    options = (_MEAN, ("delta", 1.0))


class SmoothL1Loss(Loss):
    """Smooth L1 loss with threshold ``beta``; see :func:`anyloss.smooth_l1_loss`."""

    function = "smooth_l1_loss"
    options = (*_LEGACY, _MEAN, ("beta", 1.0))


class SoftMarginLoss(Loss):
    """Two-class logistic loss; see :func:`anyloss.soft_margin_loss`."""

    function = "soft_margin_loss"


class HingeEmbeddingLoss(Loss):
    """Hinge embedding loss; see :func:`anyloss.hinge_embedding_loss`."""

    function = "hinge_embedding_loss"
    options = (("margin", 1.0), *_LEGACY, _MEAN)


class MarginRankingLoss(Loss):
    """Pairwise ranking loss; see :func:`anyloss.margin_ranking_loss`."""

    function = "margin_ranking_loss"
    options = (("margin", 0.0), *_LEGACY, _MEAN)
    inputs = ("input1", "input2", "target")


class KLDivLoss(Loss):
    """Kullback-Leibler divergence of log-probabilities; see :func:`anyloss.kl_div`."""

    function = "kl_div"
    options = (*_LEGACY, _MEAN, ("log_target", False))


class PoissonNLLLoss(Loss):
    """Poisson negative log-likelihood; see :func:`anyloss.poisson_nll_loss`."""

    function = "poisson_nll_loss"
    options = (("log_input", True), ("full", False), _LEGACY[0], ("eps", 1e-8), _LEGACY[1], _MEAN)
    inputs = ("log_input", "target")


class GaussianNLLLoss(Loss):
    """Gaussian negative log-likelihood; see :func:`anyloss.gaussian_nll_loss`."""

    function = "gaussian_nll_loss"
    options = (KEYWORD_ONLY, ("full", False), ("eps", 1e-6), _MEAN)
    inputs = ("input", "target", "var")


class NLLLoss(Loss):
    """Negative log-likelihood of class indices; see :func:`anyloss.nll_loss`."""

    function = "nll_loss"
    options = (("weight", None), _LEGACY[0], ("ignore_index", -100), _LEGACY[1], _MEAN)


class NLLLoss2d(NLLLoss):
    """Deprecated alias of :class:`NLLLoss`, kept for torch compatibility; warns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warn(
            "NLLLoss2d has been deprecated. Please use NLLLoss instead as a drop-in replacement.",
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


class CrossEntropyLoss(Loss):
    """Cross entropy of logits; see :func:`anyloss.cross_entropy`."""

    function = "cross_entropy"
    options = (("weight", None), _LEGACY[0], ("ignore_index", -100), _LEGACY[1], _MEAN,
               ("label_smoothing", 0.0))


class BCELoss(Loss):
    """Binary cross entropy of probabilities; see :func:`anyloss.binary_cross_entropy`."""

    function = "binary_cross_entropy"
    options = (("weight", None), *_LEGACY, _MEAN)


class BCEWithLogitsLoss(Loss):
    """Binary cross entropy of logits; see :func:`anyloss.binary_cross_entropy_with_logits`."""

    function = "binary_cross_entropy_with_logits"
    options = (("weight", None), *_LEGACY, _MEAN, ("pos_weight", None))


class MultiLabelSoftMarginLoss(Loss):
    """Multi-label logistic loss; see :func:`anyloss.multilabel_soft_margin_loss`."""

    function = "multilabel_soft_margin_loss"
    options = (("weight", None), *_LEGACY, _MEAN)


class MultiLabelMarginLoss(Loss):
    """Multi-label hinge loss; see :func:`anyloss.multilabel_margin_loss`."""

    function = "multilabel_margin_loss"


class MultiMarginLoss(Loss):
    """Multi-class hinge loss; see :func:`anyloss.multi_margin_loss`."""

    function = "multi_margin_loss"
    options = (("p", 1), ("margin", 1.0), ("weight", None), *_LEGACY, _MEAN)


class CosineEmbeddingLoss(Loss):
    """Cosine similarity loss for pairs; see :func:`anyloss.cosine_embedding_loss`."""

    function = "cosine_embedding_loss"
    options = (("margin", 0.0), *_LEGACY, _MEAN)
    inputs = ("input1", "input2", "target")


class TripletMarginLoss(Loss):
    """Triplet loss with p-norm distances; see :func:`anyloss.triplet_margin_loss`."""

    function = "triplet_margin_loss"
    options = (("margin", 1.0), ("p", 2.0), ("eps", 1e-6), ("swap", False), *_LEGACY, _MEAN)
    inputs = ("anchor", "positive", "negative")


class TripletMarginWithDistanceLoss(Loss):
    """Triplet loss with any distance; see :func:`anyloss.triplet_margin_with_distance_loss`."""

    function = "triplet_margin_with_distance_loss"
    options = (KEYWORD_ONLY, ("distance_function", None), ("margin", 1.0), ("swap", False), _MEAN)
    inputs = ("anchor", "positive", "negative")


class CTCLoss(Loss):
    """Connectionist temporal classification loss; see :func:`anyloss.ctc_loss`."""

    function = "ctc_loss"
    options = (("blank", 0), _MEAN, ("zero_infinity", False))
    inputs = ("log_probs", "targets", "input_lengths", "target_lengths")


#: A constructor argument without a default (torch's required ones).
REQUIRED = inspect.Parameter.empty


class LinearCrossEntropyLoss(Loss):
    r"""Cross entropy of a linear layer that the loss holds; see
    :func:`anyloss.linear_cross_entropy`.

    As torch's class does, it owns the layer: ``linear_weight``, ``(C * prod(out_features),
    in_features)``, and with ``bias=True`` ``linear_bias``, ``(C * prod(out_features),)``,
    reshaped to ``(C, *out_features, ...)`` for each call. The arrays are created on the
    first call, in the input's library and device and in ``dtype`` (default: the
    input's), uniform in :math:`\pm 1/\sqrt{\text{in\_features}}` as
    ``torch.nn.Linear`` initialises them; assign them to load or train weights.

    Raises
    ------
    ValueError
        torch's messages for a ``weight`` not of shape ``(num_classes,)`` and a
        ``label_smoothing`` outside ``[0, 1]``.
    """

    function = "linear_cross_entropy"
    options = (("in_features", REQUIRED), ("num_classes", REQUIRED), KEYWORD_ONLY,
               ("out_features", ()), ("bias", False), ("device", None), ("dtype", None),
               _MEAN, ("weight", None), ("ignore_index", None), ("label_smoothing", 0.0),
               ("options", None))
    in_features: int
    num_classes: int
    out_features: tuple[int, ...]
    bias: bool
    device: Any
    dtype: Any
    reduction: str
    weight: Array | None
    ignore_index: int | None
    label_smoothing: float
    # ``options`` (the chunked path's, torch's name) is stored on the instance too: the
    # base class reads its table as ``type(self).options``.
    linear_weight: Array | None
    linear_bias: Array | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.weight is not None and tuple(self.weight.shape) != (self.num_classes,):
            raise ValueError(f"expected weight shape to be {(self.num_classes,)}, got "
                             f"{tuple(self.weight.shape)}")
        if self.label_smoothing < 0 or self.label_smoothing > 1.0:
            raise ValueError("expected label_smoothing to be in range [0, 1], got "
                             f"{self.label_smoothing}")
        self.out_features = tuple(self.out_features)
        self.linear_weight = None
        self.linear_bias = None

    def _parameters(self, input: Array) -> None:
        """Create the layer's arrays beside ``input`` (the first call)."""
        xp = namespace(type(self).__name__, {"input": input})
        rows = self.num_classes * math.prod(self.out_features)
        dtype = input.dtype if self.dtype is None else self.dtype
        where = device(input) if self.device is None else self.device
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        self.linear_weight = uniform(xp, (rows, self.in_features), bound, dtype, where)
        if self.bias:
            self.linear_bias = uniform(xp, (rows,), bound, dtype, where)

    def forward(self, *args: Array) -> Array:
        """The loss of ``(input, target)`` through the held layer."""
        import anyloss

        if len(args) != 2:
            raise TypeError(f"{type(self).__name__}.forward() takes 2 arrays (input, target), "
                            f"got {len(args)}")
        input, target = args
        if self.linear_weight is None:
            self._parameters(input)
        assert self.linear_weight is not None
        xp = namespace(type(self).__name__, {"linear_weight": self.linear_weight})
        shape = (self.num_classes, *self.out_features)
        weight = xp.reshape(self.linear_weight, (*shape, self.linear_weight.shape[-1]))
        bias = None if self.linear_bias is None else xp.reshape(self.linear_bias, shape)
        return anyloss.linear_cross_entropy(
            input, weight, target, linear_bias=bias, weight=self.weight,
            reduction=self.reduction, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, options=self.options)
