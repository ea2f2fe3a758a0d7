"""One small request-language program per differentiable op of the table, at a smooth point.

Shared by the verification tests (every op checked against the references, every op's VJP
mutated and caught). A test fails when an op of the table has no program here.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(1234)


def _any(*shape: int) -> np.ndarray:
    return _rng.normal(size=shape)


def _pos(*shape: int) -> np.ndarray:
    return _rng.uniform(0.5, 2.0, size=shape)


def _distinct(*shape: int) -> np.ndarray:
    """Values well apart, so no ties and no kinks at 0."""
    n = int(np.prod(shape))
    return (_rng.permutation(n) - n / 2 + 0.37).reshape(shape) * 0.3


PROGRAMS: dict[str, tuple[str, dict[str, np.ndarray]]] = {
    "add": ("y = x + w", {"x": _any(3), "w": _any(2, 3)}),
    "sub": ("y = x - w", {"x": _any(2, 3), "w": _any(3)}),
    "mul": ("y = x * w", {"x": _any(2, 1), "w": _any(3)}),
    "div": ("y = x / w", {"x": _any(3), "w": _pos(2, 3)}),
    "neg": ("y = -x", {"x": _any(3)}),
    "pow": ("y = x ** 3", {"x": _any(3)}),
    "pow_tensor": ("y = x ** w", {"x": _pos(3), "w": _any(3)}),
    "rpow": ("y = 2 ** x", {"x": _any(3)}),
    "rsub": ("y = 1 - x", {"x": _any(3)}),
    "maximum": ("y = maximum(x, w)", {"x": _distinct(4), "w": _distinct(4) + 0.05}),
    "minimum": ("y = minimum(x, w)", {"x": _distinct(4), "w": _distinct(4) + 0.05}),
    "abs": ("y = abs(x)", {"x": _distinct(4)}),
    "exp": ("y = exp(x)", {"x": _any(3)}),
    "log": ("y = log(x)", {"x": _pos(3)}),
    "log1p": ("y = log1p(x)", {"x": _pos(3)}),
    "expm1": ("y = expm1(x)", {"x": _any(3)}),
    "sqrt": ("y = sqrt(x)", {"x": _pos(3)}),
    "reciprocal": ("y = reciprocal(x)", {"x": _pos(3)}),
    "sin": ("y = sin(x)", {"x": _any(3)}),
    "cos": ("y = cos(x)", {"x": _any(3)}),
    "tan": ("y = tan(x)", {"x": _any(3) * 0.3}),
    "tanh": ("y = tanh(x)", {"x": _any(3)}),
    "sigmoid": ("y = sigmoid(x)", {"x": _any(3)}),
    "relu": ("y = relu(x)", {"x": _distinct(4)}),
    "leaky_relu": ("y = leaky_relu(x, negative_slope=0.2)", {"x": _distinct(4)}),
    "softplus": ("y = softplus(x, beta=2.0)", {"x": _any(3)}),
    "silu": ("y = silu(x)", {"x": _any(3)}),
    "gelu": ("y = gelu(x)", {"x": _any(3)}),
    "clamp": ("y = clamp(x, min=-0.4, max=0.4)", {"x": _distinct(5)}),
    "sign": ("y = sign(x) * x", {"x": _distinct(4)}),
    "floor": ("y = floor(x) + x", {"x": _distinct(4)}),
    "round": ("y = round(x) + x", {"x": _distinct(4)}),
    "sum": ("y = sum(x, axis=1)", {"x": _any(2, 3)}),
    "mean": ("y = mean(x, axis=0, keepdims=True)", {"x": _any(2, 3)}),
    "prod": ("y = prod(x, axis=1)", {"x": _pos(2, 3)}),
    "max": ("y = max(x, axis=1)", {"x": _distinct(2, 3)}),
    "min": ("y = min(x)", {"x": _distinct(2, 3)}),
    "amax": ("y = amax(x, axis=(0, 1))", {"x": _distinct(2, 3)}),
    "amin": ("y = amin(x, axis=0)", {"x": _distinct(2, 3)}),
    "logsumexp": ("y = logsumexp(x, axis=-1)", {"x": _any(2, 3)}),
    "var": ("y = var(x, axis=1)", {"x": _any(2, 3)}),
    "std": ("y = std(x)", {"x": _any(2, 3)}),
    "norm": ("y = norm(x, axis=0)", {"x": _any(2, 3)}),
    "matmul": ("y = A @ x", {"A": _any(3, 4), "x": _any(4)}),
    "dot": ("y = dot(a, b)", {"a": _any(4), "b": _any(4)}),
    "outer": ("y = outer(a, b)", {"a": _any(2), "b": _any(3)}),
    "reshape": ("y = reshape(x, (3, 2)) * w", {"x": _any(2, 3), "w": _any(3, 2)}),
    "flatten": ("y = flatten(x) * w", {"x": _any(2, 3), "w": _any(6)}),
    "squeeze": ("y = squeeze(x, axis=1) * w", {"x": _any(3, 1), "w": _any(3)}),
    "unsqueeze": ("y = unsqueeze(x, axis=0) * w", {"x": _any(3), "w": _any(2, 3)}),
    "transpose": ("y = transpose(x, 0, 1) * w", {"x": _any(2, 3), "w": _any(3, 2)}),
    "permute": ("y = permute(x, (2, 0, 1)) * w", {"x": _any(2, 3, 2), "w": _any(2, 2, 3)}),
    "expand": ("y = expand(x, (4, 3)) * w", {"x": _any(1, 3), "w": _any(4, 3)}),
    "broadcast_to": ("y = broadcast_to(x, (2, 3)) * w", {"x": _any(3), "w": _any(2, 3)}),
    "concat": ("y = concat([x, w], axis=0) * 2", {"x": _any(2, 3), "w": _any(1, 3)}),
    "stack": ("y = stack([x, w], axis=1) * 2", {"x": _any(3), "w": _any(3)}),
    "split": ("p, q = split(x, 2)\ny = p * q", {"x": _any(4)}),
    "getitem": ("y = x[1:, [0, 2, 2]] * 2", {"x": _any(3, 3)}),
    "flip": ("y = flip(x, axis=0) * w", {"x": _any(3), "w": _any(3)}),
    "pad": ("y = pad(x, (1, 2)) * w", {"x": _any(2, 3), "w": _any(2, 6)}),
    "where": ("y = where(x > 0, x * w, w)", {"x": _distinct(4), "w": _any(4)}),
    "masked_fill": ("y = masked_fill(x * w, x > 0, 0.5)", {"x": _distinct(4), "w": _any(4)}),
    "clone": ("y = clone(x) * x", {"x": _any(3)}),
    "softmax": ("y = softmax(x, axis=1)", {"x": _any(2, 3)}),
    "log_softmax": ("y = log_softmax(x, axis=0)", {"x": _any(2, 3)}),
    "mse_loss": ("y = mse_loss(x, w)", {"x": _any(2, 3), "w": _any(2, 3)}),
    "nll_loss": ("y = nll_loss(log_softmax(z, axis=1), t)", {"z": _any(3, 4), "t": np.array([0, 3, 1])}),
    "cross_entropy": ("y = cross_entropy(z, t)", {"z": _any(3, 4), "t": np.array([2, 0, 1])}),
    "binary_cross_entropy_with_logits": (
        "y = binary_cross_entropy_with_logits(x, w)",
        {"x": _any(2, 3), "w": _rng.uniform(0, 1, (2, 3))},
    ),
}

# A composite op's own node is the last one torch (and the engine) builds for it.
NODE_OP = {"cross_entropy": "nll_loss"}
