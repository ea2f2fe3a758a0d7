"""Elementwise ops: arithmetic with broadcasting, activations, and the ops with zero gradient."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ..graph import Node
from ..record import record, record_on_tensor
from ..tensor import Tensor, scaled_by_alpha
from .core import NumpyOps, _sigmoid, apply, batch_dims, data, define, operand, unbroadcast

# Each VJP is vjp(B, node, g, s): s holds the saved operands in order, then the saved result.


def _binary_grads(B: Any, node: Node, g: Any, gx: Any, gy: Any) -> tuple[Any, Any]:
    """Each operand's gradient summed back to its own shape (undoing broadcasting)."""
    needs, meta = node._needs, node._in_meta
    if needs[0] and gx.shape != meta[0][0]:
        gx = unbroadcast(B, gx, meta[0][0], batch_dims(node, g))
    if needs[1] and gy.shape != meta[1][0]:
        gy = unbroadcast(B, gy, meta[1][0], batch_dims(node, g))
    return (gx if needs[0] else None, gy if needs[1] else None)


# ---------------------------------------------------------------- arithmetic

_ADD = define("add", np.add, lambda B, n, g, s: _binary_grads(B, n, g, g, g), save="none")
_SUB = define("sub", np.subtract, lambda B, n, g, s: _binary_grads(B, n, g, g, -g), save="none")
_MUL = define(
    "mul",
    np.multiply,
    lambda B, n, g, s: _binary_grads(
        B, n, g, g * s[1] if n._needs[0] else None, g * s[0] if n._needs[1] else None
    ),
    save="other",
)


def _div_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    x, y = s[0], s[1]
    gx = g / y
    return _binary_grads(B, n, g, gx, -gx * x / y if n._needs[1] else None)


_DIV = define("div", np.true_divide, _div_vjp, save="divisor")
_NEG = define("neg", np.negative, lambda B, n, g, s: (-g,), save="none")
_RSUB = define("rsub", lambda x, other: other - x, lambda B, n, g, s: (-g,), save="none")


def _pow_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    p = n._attrs["exponent"]
    if p == 0:
        return (B.zeros_like(g),)
    return (g * (p * s[0] ** (p - 1)),)


def _power(x: Any, exponent: Any) -> Any:
    """x ** a Python number: torch's RuntimeError where numpy raises ValueError (an integer tensor
    to a negative integer power)."""
    try:
        return np.power(x, exponent)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None


def _tensor_power(x: Any, y: Any) -> Any:
    """x ** y with a tensor on either side: integers to negative integer powers are computed as
    torch does, in integers (1 for 1, +-1 for -1, else 0), where numpy refuses them."""
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.dtype.kind not in "iu" or ya.dtype.kind not in "iu" or not (ya < 0).any():
        return np.power(x, y)  # (a Python number stays weak: 2.0 ** float32 is float32, as torch)
    negative = ya < 0
    inverse = np.where(xa == 1, 1, np.where(xa == -1, np.where(ya % 2 == 0, 1, -1), 0))
    return np.where(negative, inverse, np.power(xa, np.where(negative, 0, ya))).astype(
        np.result_type(xa, ya)
    )


_POW = define("pow", _power, _pow_vjp)


def _pow_tensor_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
    x, y, out = s
    gx = None
    if n._needs[0]:
        # torch's convention: d(x**y)/dx = 0 where y == 0 (also at x == 0, where x**(y-1) is inf)
        zero = np.asarray(data(y)) == 0
        gx = g * (y * x ** (y - 1))
        if zero.any():
            gx = B.where(zero, 0.0, gx)
    gy = None
    if n._needs[1]:
        # torch's convention: d(x**y)/dy = 0 where x == 0 and y >= 0 (log 0 would give nan).
        xd, yd = data(x), data(y)
        safe = B.where((xd == 0) & (yd >= 0), 1.0, x)
        gy = B.where((xd == 0) & (yd >= 0), 0.0, g * out * B.log(safe))
    return _binary_grads(B, n, g, gx, gy)


_POW_TENSOR = define("pow_tensor", _tensor_power, _pow_tensor_vjp, save_output=True)


def _rpow_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    base = n._attrs["base"]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_base = float(np.log(np.float64(base)))  # -inf at 0, nan below: as torch (a
        # Python float, weak: the gradient stays in the tensor's dtype)
    grad = g * s[-1] * log_base
    if base == 0:  # torch: 0 ** x has gradient 0 where x >= 0 (not 0 * -inf)
        grad = B.where(np.asarray(data(s[0])) >= 0, 0.0, grad)
    return (grad,)


_RPOW = define("rpow", lambda x, base: _tensor_power(base, x), _rpow_vjp, save_output=True)


def _extremum_vjp(greater: bool) -> Any:
    """As torch: the winner gets the gradient, ties split it in halves, and the loser gets 0
    selected, not multiplied (a nan or inf gradient does not leak into it); where an operand is
    nan neither loses, so both get it. Operands are compared in the result's dtype, as the
    forward did: float32 [0.1] and float64 0-d 0.1 tie in float32."""

    def vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any, Any]:
        dtype = n._out_meta[0][1]
        xd, yd = np.asarray(data(s[0])).astype(dtype), np.asarray(data(s[1])).astype(dtype)
        x_loses, y_loses = (xd < yd, xd > yd) if greater else (xd > yd, xd < yd)
        shared = B.where(xd == yd, g * 0.5, g)
        return _binary_grads(B, n, g, B.where(x_loses, 0.0, shared), B.where(y_loses, 0.0, shared))

    return vjp


_MAXIMUM = define("maximum", np.maximum, _extremum_vjp(True))
_MINIMUM = define("minimum", np.minimum, _extremum_vjp(False))


# ---------------------------------------------------------------- unary functions


def _unary(name: str, forward: Any, vjp: Any, save: str = "all", save_output: bool = False) -> Any:
    impl = define(name, forward, vjp, save, save_output)

    def op(x: Any) -> Tensor:
        if type(x) is Tensor:
            return record_on_tensor(impl, x, (x,))
        return record(impl, (operand(x),))

    op.__name__ = name
    op.__doc__ = f"Elementwise {name}."
    return op


def _sgn(x: Any) -> np.ndarray:
    """torch's sign: 0 at nan (numpy's is nan)."""
    sign = np.sign(x)
    return np.where(np.isnan(sign), 0, sign).astype(sign.dtype) if sign.dtype.kind == "f" else sign


def _float(x: np.ndarray) -> np.ndarray:
    """Integer and boolean values as float64 (a true quotient is never an integer, as torch)."""
    return x if x.dtype.kind in "fc" else x.astype(np.float64)


# abs' gradient is g * sgn(x), torch's: 0 at nan (a nan input with a zero mask gives 0, not nan).
# Under create_graph sgn(x) is recorded, as torch records it: its derivative is 0, but the
# gradient depends on x (differentiating it again gives zeros, not "does not require grad").
abs = _unary(
    "abs",
    np.abs,
    lambda B, n, g, s: (g * (_sgn(s[0]) if B is NumpyOps else B.sign(s[0])),),
)
exp = _unary("exp", np.exp, lambda B, n, g, s: (g * s[-1],), "none", True)
log = _unary("log", np.log, lambda B, n, g, s: (g / s[0],))
log1p = _unary("log1p", np.log1p, lambda B, n, g, s: (g / (s[0] + 1),))
expm1 = _unary("expm1", np.expm1, lambda B, n, g, s: (g * (s[-1] + 1),), "none", True)
sqrt = _unary("sqrt", np.sqrt, lambda B, n, g, s: (g / (2 * s[-1]),), "none", True)
reciprocal = _unary(
    "reciprocal",
    lambda x: np.reciprocal(_float(x)),
    lambda B, n, g, s: (-g * (s[-1] * s[-1]),),
    "none",
    True,
)
sin = _unary("sin", np.sin, lambda B, n, g, s: (g * B.cos(s[0]),))
cos = _unary("cos", np.cos, lambda B, n, g, s: (-g * B.sin(s[0]),))
tan = _unary("tan", np.tan, lambda B, n, g, s: (g * (1 + s[-1] * s[-1]),), "none", True)
# g * -(y*y - 1), not g * (1 - y*y): numpy then reuses its temporaries (one new array, not two)
tanh = _unary("tanh", np.tanh, lambda B, n, g, s: (g * -(s[-1] * s[-1] - 1),), "none", True)
sigmoid = _unary("sigmoid", _sigmoid, lambda B, n, g, s: (g * (s[-1] * (1 - s[-1])),), "none", True)

# torch's threshold_backward(g, result, 0): g where the result is positive; in the result its
# derivative is 0, which a second backward passes on (as zeros) through relu's node
_THRESHOLD_BACKWARD = define(
    "threshold_backward",
    NumpyOps.threshold_backward,
    lambda B, n, g, s: (B.threshold_backward(g, s[1]), B.zeros_like(g)),
    save=(1,),
)


def threshold_backward(g: Any, result: Any) -> Tensor:
    return apply(_THRESHOLD_BACKWARD, operand(g), operand(result))


relu = _unary(
    "relu",
    lambda x: np.maximum(x, 0),
    # relu'(0) = 0 and relu'(nan) = 1, as torch (its threshold_backward zeroes where x <= 0)
    lambda B, n, g, s: (B.threshold_backward(g, s[-1]),),
    "none",
    True,
)
clone = _unary("clone", np.copy, lambda B, n, g, s: (g,), "none")
silu = _unary(
    "silu",
    lambda x: x * _sigmoid(x),
    lambda B, n, g, s: (g * (B.sigmoid(s[0]) * (1 + s[0] * (1 - B.sigmoid(s[0])))),),
)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf elementwise in x's dtype: scipy's where it is installed (the server's extra brings
    it), else the standard library's, entry by entry."""
    scipy_erf = _scipy_erf()
    if scipy_erf is not None:
        return scipy_erf(x)
    x = _float(np.asarray(x))
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype, copy=False)


@functools.cache
def _scipy_erf() -> Any:
    try:  # imported at first use: the engine alone needs numpy only, and imports fast
        from scipy.special import erf
    except ImportError:
        return None
    return erf


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
erf = _unary("erf", _erf, lambda B, n, g, s: (g * (_TWO_OVER_SQRT_PI * B.exp(-(s[0] * s[0]))),))

# torch's gelu: exact (with erf) by default, or its tanh approximation
_SQRT1_2 = math.sqrt(0.5)
_GELU_PDF = 1 / math.sqrt(2 * math.pi)
_GELU_K = math.sqrt(2 / math.pi)
_GELU_C = 0.044715


def _gelu_fwd(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_GELU_K * (x + _GELU_C * x * x * x)))
    return x * 0.5 * (1.0 + _erf(x * _SQRT1_2))


def _gelu_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    x = s[0]
    if n._attrs["approximate"] == "tanh":
        t = B.tanh(_GELU_K * (x + _GELU_C * x * x * x))
        return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_K * (1 + 3 * _GELU_C * x * x)),)
    # torch's gelu_backward: dy * (cdf + x * pdf)
    cdf = 0.5 * (1 + B.erf(x * _SQRT1_2))
    return (g * (cdf + x * (_GELU_PDF * B.exp(-0.5 * x * x))),)


_GELU = define("gelu", _gelu_fwd, _gelu_vjp)


def gelu(x: Any, approximate: str = "none") -> Tensor:
    """torch.nn.functional.gelu: x * Phi(x) with the normal cdf (erf), or approximate="tanh"."""
    return apply(_GELU, operand(x), approximate=approximate)


def _no_grad_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    return (B.zeros_like(g),)


sign = _unary("sign", _sgn, _no_grad_vjp, "none")
floor = _unary("floor", np.floor, _no_grad_vjp, "none")
round = _unary("round", np.round, _no_grad_vjp, "none")


def _leaky_relu_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    grad = B.where(data(s[0]) > 0, g, g * n._attrs["negative_slope"])
    if B is NumpyOps:
        return (grad,)
    # under create_graph the gradient depends on x, as torch's leaky_relu_backward(g, x) does:
    # with a derivative of 0 (sign(x) * 0 is 0, never nan), not "does not require grad"
    return (grad + B.sign(s[0]) * 0.0,)


_LEAKY = define(
    "leaky_relu", lambda x, negative_slope: np.where(x > 0, x, x * negative_slope), _leaky_relu_vjp
)


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Tensor:
    return apply(_LEAKY, operand(x), negative_slope=negative_slope)


def _softplus_fwd(x: np.ndarray, beta: float, threshold: float) -> np.ndarray:
    bx = x * beta
    return np.where(bx > threshold, x, np.logaddexp(0, bx) / beta)


_SOFTPLUS = define(
    "softplus",
    _softplus_fwd,
    lambda B, n, g, s: (
        B.where(
            data(s[0]) * n._attrs["beta"] > n._attrs["threshold"],
            g,
            g * B.sigmoid(s[0] * n._attrs["beta"]),
        ),
    ),
)


def softplus(x: Any, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    return apply(_SOFTPLUS, operand(x), beta=beta, threshold=threshold)


def _clamp_fwd(x: np.ndarray, min: float | None, max: float | None) -> np.ndarray:
    return np.clip(x, min, max)


def _clamp_vjp(B: Any, n: Node, g: Any, s: tuple[Any, ...]) -> tuple[Any]:
    x, lo, hi = data(s[0]), n._attrs["min"], n._attrs["max"]
    inside = np.ones(np.shape(x), bool)  # torch: gradient 1 on the bounds themselves
    if lo is not None:
        inside &= x >= lo
    if hi is not None:
        inside &= x <= hi
    return (B.where(inside, g, 0.0),)


_CLAMP = define("clamp", _clamp_fwd, _clamp_vjp)


def clamp(x: Any, min: float | None = None, max: float | None = None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    for name, bound in (("min", min), ("max", max)):
        if isinstance(bound, (Tensor, np.ndarray)):  # (numpy said only "does not support ufuncs")
            raise TypeError(
                f"clamp: {name} must be a number here, got a {type(bound).__name__} (tensor "
                "bounds are not supported: maximum(x, lo) and minimum(x, hi) clamp to them, "
                "splitting the gradient at ties where torch's clamp gives it to x)"
            )
    return apply(_CLAMP, operand(x), min=min, max=max)


# ---------------------------------------------------------------- binary entry points


_PLAIN_NUMBERS = (float, int)  # tensor (op) number: the fast path of arithmetic


def _as_tensor_pair(x: Any, y: Any) -> tuple[Any, Any]:
    x, y = operand(x), operand(y)
    if not isinstance(x, Tensor) and not isinstance(y, Tensor):
        x = Tensor(x)
    return x, y


def add(x: Any, y: Any, alpha: Any = 1) -> Tensor:
    """x + alpha * y (torch's add: alpha times y is recorded as its own MulBackward0 here)."""
    if alpha != 1:
        y = scaled_by_alpha(x, y, alpha)
    if type(x) is Tensor and type(y) in _PLAIN_NUMBERS:  # the hot path: no conversion needed
        return record_on_tensor(_ADD, x, (x, y))
    return record(_ADD, _as_tensor_pair(x, y))


def sub(x: Any, y: Any, alpha: Any = 1) -> Tensor:
    """x - alpha * y (torch's sub: alpha times y is recorded as its own MulBackward0 here)."""
    if alpha != 1:
        y = scaled_by_alpha(x, y, alpha)
    if type(x) is Tensor and type(y) in _PLAIN_NUMBERS and x.dtype != np.bool_:
        return record_on_tensor(_SUB, x, (x, y))
    _no_bool_subtraction(x, y)
    x, y = _as_tensor_pair(x, y)
    if not isinstance(x, Tensor):  # number - tensor: torch records RsubBackward1
        return apply(_RSUB, y, other=x)
    return apply(_SUB, x, y)


def _no_bool_subtraction(x: Any, y: Any) -> None:
    """torch's errors for `-` with a bool tensor (or a bool beside a tensor)."""
    if not any(isinstance(v, Tensor) for v in (x, y)):
        return
    bools = [
        isinstance(v, (bool, np.bool_)) or (isinstance(v, Tensor) and v.dtype == np.bool_)
        for v in (x, y)
    ]
    if all(bools):
        raise RuntimeError(
            "Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` or "
            "`logical_xor()` operator instead."
        )
    if any(bools):
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. If you are trying "
            "to invert a mask, use the `~` or `logical_not()` operator instead."
        )


def mul(x: Any, y: Any) -> Tensor:
    if type(x) is Tensor and type(y) in _PLAIN_NUMBERS:
        return record_on_tensor(_MUL, x, (x, y))
    return record(_MUL, _as_tensor_pair(x, y))


def div(x: Any, y: Any) -> Tensor:
    if type(x) is Tensor and type(y) in _PLAIN_NUMBERS:
        return record_on_tensor(_DIV, x, (x, y))
    x, y = _as_tensor_pair(x, y)
    if not isinstance(x, Tensor):  # number / tensor = reciprocal(tensor) * number, as in torch
        return mul(reciprocal(y), x)
    return apply(_DIV, x, y)


def neg(x: Any) -> Tensor:
    return apply(_NEG, operand(x))


def pow(x: Any, y: Any) -> Tensor:
    x, y = _as_tensor_pair(x, y)
    if not isinstance(y, Tensor):
        return apply(_POW, x, exponent=y)
    if not isinstance(x, Tensor):
        return apply(_RPOW, y, base=x)
    return apply(_POW_TENSOR, x, y)


def maximum(x: Any, y: Any) -> Tensor:
    return apply(_MAXIMUM, *_as_tensor_pair(x, y))


def minimum(x: Any, y: Any) -> Tensor:
    return apply(_MINIMUM, *_as_tensor_pair(x, y))


def _comparison(name: str, fn: Any) -> Any:
    impl = define(name, fn, None)

    def op(x: Any, y: Any) -> Tensor:
        return apply(impl, *_as_tensor_pair(x, y))

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} (a boolean tensor; no gradient)."
    return op


lt = _comparison("lt", np.less)
le = _comparison("le", np.less_equal)
gt = _comparison("gt", np.greater)
ge = _comparison("ge", np.greater_equal)
eq = _comparison("eq", np.equal)
ne = _comparison("ne", np.not_equal)
