"""k-bit fake quantization of weights and activations of a frozen backbone.

Weights
-------
Symmetric, per-output-channel (dim 0) fake quantization of every prunable layer's weight (the
``nn.Conv2d`` / ``nn.Linear`` set of :func:`hiddencost.compression.pruning.prunable_layers`;
biases and normalisation layers stay in full precision). For ``k`` bits and output channel ``c``::

    q_max   = 2^(k-1) - 1
    scale_c = max_i |w_c,i| / q_max
    w_q     = clamp(round(w / scale_c), -q_max, q_max) * scale_c

``round`` is :func:`torch.round` (halves go to the even integer). A channel of zeros stays zero.
The levels are the integers ``-q_max..q_max``, so a channel holds at most ``2^k - 1`` distinct
values (within the ``2^k`` a k-bit code allows); 2-bit symmetric quantization gives the three
levels ``{-s, 0, s}``. The result is stored back in floating point ("fake" quantization): it
reproduces the accuracy effect of integer weights, not their speed or size.

Activations
-----------
:func:`quantize_activations` puts an :class:`ActivationFakeQuant` on the *input* of every
prunable layer by replacing the layer with a :class:`QuantizedInput` wrapper
(``quantizer`` then ``layer``), visible in ``print(model)`` and deep-copyable. Each quantizer
is per-tensor with a range calibrated on data (:func:`calibrate_activations`): the running maximum
of ``|x|`` and the running minimum of ``x`` over the calibration batches. If the calibrated minimum
is ``>= 0`` (e.g. after ReLU) it is unsigned with levels ``0..2^k - 1``, ``scale = max|x| /
(2^k - 1)``; otherwise symmetric signed with levels ``-q_max..q_max``, ``scale = max|x| / q_max``.
Values beyond the calibrated range are clamped.

The forward uses a straight-through estimator (STE)::

    y = x + (q(x) - x).detach()

so the output equals ``q(x)`` while ``dy/dx = 1``: gradients pass through the quantizers
unchanged, which lets visual prompting train its input prompt through a quantized backbone.

A model whose ``forward`` does not reach all of its layers (CLIP: ``forward`` is the image
tower, the text tower runs in ``encode_texts``) may define ``calibrate_rest()``: calibration
calls it once after the images, in the same recording mode, to run those layers on its own
calibration inputs (CLIP's: text prompts, see :meth:`hiddencost.clip.towers.ClipTowers`).

Layers inside ``nn.MultiheadAttention`` (its ``out_proj``) are not wrapped: that module reads
``out_proj.weight`` directly and never calls ``out_proj``, so an input quantizer there would never
run. Their weights are still quantized by :func:`quantize_weights`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import torch
from torch import nn

from hiddencost.compression.pruning import prunable_layers
from hiddencost.compression.spec import SUPPORTED_BITS
from hiddencost.errors import HiddenCostError

__all__ = [
    "SUPPORTED_BITS",
    "ActivationFakeQuant",
    "QuantizedInput",
    "activation_quantizers",
    "calibrate_activations",
    "check_bits",
    "quantize_activations",
    "quantize_weight_tensor",
    "quantize_weights",
]



def check_bits(bits: object, what: str = "bits") -> int:
    """Return ``bits`` as an int if it is one of :data:`SUPPORTED_BITS`, else raise."""
    if (
        isinstance(bits, bool)
        or not isinstance(bits, numbers.Integral)
        or bits not in SUPPORTED_BITS
    ):
        raise HiddenCostError(
            f"{what} must be one of {', '.join(map(str, SUPPORTED_BITS))}, got {bits!r}"
        )
    return int(bits)


def quantize_weight_tensor(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization of a weight tensor (returns a new tensor).

    For output channel ``c`` (slice ``w[c]``) and ``k = bits``::

        q_max   = 2^(k-1) - 1
        scale_c = max |w_c| / q_max
        w_q     = clamp(round(w / scale_c), -q_max, q_max) * scale_c

    with :func:`torch.round` (round half to even). An all-zero channel stays zero. Each channel
    takes at most ``2^k - 1 <= 2^k`` distinct values; 2 bits give ``{-s, 0, s}``. Computed in
    float32 (float64 kept) and returned in ``w``'s dtype, shape and memory format.
    Supported ``bits``: 2, 3, 4, 8; anything else raises :class:`HiddenCostError`.
    """
    bits = check_bits(bits, "weight bits")
    if w.dim() < 1 or w.numel() == 0:
        raise HiddenCostError(f"cannot quantize a weight of shape {tuple(w.shape)}")
    q_max = 2 ** (bits - 1) - 1
    work = w.detach()
    if work.dtype != torch.float64:
        work = work.float()
    amax = work.abs().amax(dim=tuple(range(1, work.dim()))) if work.dim() > 1 else work.abs()
    scale = amax / q_max
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # zero channel -> zeros
    scale = scale.reshape((-1,) + (1,) * (work.dim() - 1))
    wq = torch.clamp(torch.round(work / scale), -q_max, q_max) * scale
    return wq.to(dtype=w.dtype)


def quantize_weights(
    model: nn.Module,
    bits: int,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> nn.Module:
    """Fake-quantize the prunable layers' weights in place (see :func:`quantize_weight_tensor`).

    Uses the layer set of :func:`~hiddencost.compression.pruning.prunable_layers` with the same
    exclusions. Returns ``model``.
    """
    bits = check_bits(bits, "weight bits")
    layers = prunable_layers(model, exclude_first_conv, exclude_classifier)
    if not layers:
        raise HiddenCostError(
            f"{type(model).__name__} has no quantizable layers (nn.Conv2d / nn.Linear) in scope"
        )
    with torch.no_grad():
        for _, m in layers:
            m.weight.copy_(quantize_weight_tensor(m.weight, bits))
    return model


class ActivationFakeQuant(nn.Module):
    """Per-tensor k-bit fake quantizer of activations with a straight-through estimator.

    States: *uncalibrated* (forward raises), *calibrating* (forward returns ``x`` unchanged and
    records ``max |x|`` and ``min x``; set by :func:`calibrate_activations`) and *calibrated*
    (forward quantizes). With ``absmax`` the calibrated ``max |x|``:

    - calibrated ``min x >= 0``: unsigned, ``scale = absmax / (2^k - 1)``,
      ``q(x) = clamp(round(x / scale), 0, 2^k - 1) * scale``;
    - otherwise: signed symmetric, ``q_max = 2^(k-1) - 1``, ``scale = absmax / q_max``,
      ``q(x) = clamp(round(x / scale), -q_max, q_max) * scale``.

    ``forward(x) = x + (q(x) - x).detach()``: the value is ``q(x)``, the gradient w.r.t. ``x`` is
    the identity (STE). If ``absmax == 0`` the output is all zeros. The statistics are buffers, so
    they travel with ``state_dict``, ``deepcopy`` and ``.to(device)``.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits, "activation bits")
        self.calibrating = False
        self._calibrated: bool | None = None
        self.register_buffer("absmax", torch.zeros((), dtype=torch.float32))
        self.register_buffer("min_value", torch.full((), float("inf"), dtype=torch.float32))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    @property
    def calibrated(self) -> bool:
        """Whether calibration has observed at least one batch."""
        if self._calibrated is None:  # cached so that forward does not sync a GPU every call
            self._calibrated = bool(self.num_batches.item() > 0)
        return self._calibrated

    @property
    def signed(self) -> bool:
        """Whether the calibrated range needs signed levels (calibrated minimum < 0)."""
        return bool(self.min_value.item() < 0)

    def reset_calibration(self) -> None:
        """Forget the calibrated range (the quantizer becomes uncalibrated)."""
        self.absmax.zero_()
        self.min_value.fill_(float("inf"))
        self.num_batches.zero_()
        self._calibrated = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._calibrated = None

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        """Update the running ``max |x|`` and ``min x`` with a batch."""
        xd = x.detach().float()
        if xd.numel() == 0:
            return
        self.absmax.copy_(torch.maximum(self.absmax, xd.abs().amax()))
        self.min_value.copy_(torch.minimum(self.min_value, xd.amin()))
        self.num_batches.add_(1)
        self._calibrated = True

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """The quantized value ``q(x)`` (no STE, no gradient)."""
        if not self.calibrated:
            raise HiddenCostError(
                "ActivationFakeQuant is not calibrated: run calibrate_activations(model, images) "
                "before using an activation-quantized model"
            )
        with torch.no_grad():
            xf = x.detach().float()
            # Tensor arithmetic only (no .item()), so a GPU forward does not synchronise.
            signed = self.min_value < 0
            q_signed = float(2 ** (self.bits - 1) - 1)
            hi = torch.where(signed, q_signed, float(2**self.bits - 1))
            lo = torch.where(signed, -q_signed, 0.0)
            scale = self.absmax / hi
            safe = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = torch.clamp(torch.round(xf / safe), lo, hi) * scale  # absmax == 0 -> zeros
            return q.to(dtype=x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
            return x
        return x + (self.quantize(x) - x).detach()

    def extra_repr(self) -> str:
        if not self.calibrated:
            return f"bits={self.bits}, uncalibrated"
        kind = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, absmax={self.absmax.item():.4g}"


class InputQuantized(nn.Module):
    """``forward(x) = layer(quantizer(x))``: a layer whose input is fake-quantized first.

    The original layer stays a child (``.layer``), so
    :func:`~hiddencost.compression.pruning.prunable_layers` and measurement still find it.
    Attributes the wrapper lacks (``weight``, ``in_features``, ``out_channels`` ...) are read from
    the wrapped layer, so code that inspects e.g. ``model.classifier.in_features`` keeps working.
    """

    def __init__(self, layer: nn.Module, quantizer: nn.Module) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.quantizer(x))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("layer", "quantizer") or name.startswith("__"):
                raise
            return getattr(super().__getattr__("layer"), name)


class QuantizedInput(InputQuantized):
    """A prunable layer whose input passes through an :class:`ActivationFakeQuant` first."""

    def __init__(self, layer: nn.Module, bits: int) -> None:
        super().__init__(layer, ActivationFakeQuant(bits))


def activation_quantizers(model: nn.Module) -> list[ActivationFakeQuant]:
    """All :class:`ActivationFakeQuant` modules of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, ActivationFakeQuant)]


def quantize_activations(
    model: nn.Module,
    bits: int,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> list[str]:
    """Wrap every prunable layer in a :class:`QuantizedInput` (in place) to quantize its input.

    Uses the layer set and exclusions of
    :func:`~hiddencost.compression.pruning.prunable_layers`, except layers owned by
    ``nn.MultiheadAttention`` (never called as modules; see the module docstring). The new
    quantizers are uncalibrated: run :func:`calibrate_activations` before use. Returns the
    qualified names of the wrapped layers (as they were before wrapping). Raises
    :class:`HiddenCostError` if the model already has activation quantizers or if ``model`` is
    itself a bare layer (it cannot be replaced in place).
    """
    bits = check_bits(bits, "activation bits")
    if activation_quantizers(model):
        raise HiddenCostError("model already has activation quantizers; quantize a fresh copy")
    layers = prunable_layers(model, exclude_first_conv, exclude_classifier)
    wrapped: list[str] = []
    for name, layer in layers:
        if name == "":
            raise HiddenCostError(
                "cannot add activation quantizers to a bare layer in place; wrap it in a module"
            )
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if isinstance(parent, nn.MultiheadAttention):
            continue
        wrapper = QuantizedInput(layer, bits)
        wrapper.quantizer.to(device=layer.weight.device)
        setattr(parent, child_name, wrapper)
        wrapped.append(name)
    if not wrapped:
        raise HiddenCostError(
            f"{type(model).__name__} has no layers (nn.Conv2d / nn.Linear) to quantize "
            "activations for"
        )
    return wrapped


def _batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


def _observe(model: nn.Module, quantizers: list[ActivationFakeQuant], images: torch.Tensor,
             batch_size: int) -> None:
    """Run ``images`` through ``model`` in eval mode with every quantizer recording its range;
    the modules' train/eval flags are restored afterwards."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else images.device
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for q in quantizers:
            q.calibrating = True
        with torch.no_grad():
            for batch in _batches(images, batch_size):
                model(batch.to(device))
            rest = getattr(model, "calibrate_rest", None)  # layers forward never reaches
            if callable(rest):
                rest()
    finally:
        for q in quantizers:
            q.calibrating = False
        for m, training in modes:
            m.training = training


def calibrate_activations(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 64,
    reset: bool = True,
) -> int:
    """Calibrate every :class:`ActivationFakeQuant` of ``model`` on ``images``.

    ``images`` are model inputs (already normalised), shape ``(N, C, H, W)``. The model runs in
    eval mode under :func:`torch.no_grad`, in batches of ``batch_size``, with every quantizer in
    pass-through mode recording its running ``max |x|`` and ``min x``; the previous train/eval
    flags of all modules are restored afterwards. With ``reset`` (default) earlier statistics are
    discarded first. Returns the number of quantizers that observed data; quantizers on layers
    neither the forward pass nor the model's ``calibrate_rest`` (see the module docstring)
    reaches stay uncalibrated. Raises :class:`HiddenCostError` if the model has no quantizers,
    ``images`` is empty, or no quantizer saw any data.
    """
    quantizers = activation_quantizers(model)
    if not quantizers:
        raise HiddenCostError("model has no activation quantizers; call quantize_activations first")
    if not isinstance(images, torch.Tensor) or images.dim() == 0 or images.shape[0] == 0:
        raise HiddenCostError("calibration images must be a non-empty tensor of model inputs")
    if batch_size < 1:
        raise HiddenCostError(f"batch_size must be >= 1, got {batch_size}")
    if reset:
        for q in quantizers:
            q.reset_calibration()
    _observe(model, quantizers, images, batch_size)
    n_calibrated = sum(q.calibrated for q in quantizers)
    if n_calibrated == 0:
        raise HiddenCostError("calibration reached no activation quantizer; check the model")
    return n_calibrated
