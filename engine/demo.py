"""The worked example, end to end: python -m crossgrad.engine.demo [--out DIR]."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from . import Tensor, no_grad, tensor, write_graph


def dag_lines(root: Tensor, params: dict[str, Tensor]) -> list[str]:
    """The backward graph as an indented tree, root first (shared nodes are shown once)."""
    names = {id(t): n for n, t in params.items()}
    lines: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root.grad_fn, 0)]
    while stack:
        node, depth = stack.pop()
        if node is None:
            lines.append("  " * depth + "None (a constant)")
            continue
        label = node.name()
        if label == "AccumulateGrad":
            t = node.variable
            label += f" -> {names.get(id(t), 'leaf')} {tuple(t.shape)}"
        if id(node) in seen:
            lines.append("  " * depth + label + " (shown above)")
            continue
        seen.add(id(node))
        lines.append("  " * depth + label)
        stack.extend((child, depth + 1) for child, _ in reversed(node.next_functions))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="build", help="folder for the DAG picture")
    out = Path(parser.parse_args(argv).out)

    print("Worked example: a = [2, 3], b = [6, 4] (requires_grad), Q = 3*a**3 - b**2")
    a = tensor([2.0, 3.0], requires_grad=True)
    b = tensor([6.0, 4.0], requires_grad=True)
    Q = 3 * a**3 - b**2
    print(f"Q = {Q}")
    print("DAG (root first, walking grad_fn.next_functions):")
    for line in dag_lines(Q, {"a": a, "b": b}):
        print("  " + line)
    try:
        Q.backward()
    except RuntimeError as exc:
        print(f"Q.backward() without gradient -> RuntimeError: {exc}")
    Q.backward(gradient=tensor([1.0, 1.0]), retain_graph=True)
    print(
        f"Q.backward(gradient=[1, 1]): a.grad = {a.grad.tolist()} (9a^2), "
        f"b.grad = {b.grad.tolist()} (-2b)"
    )
    files = write_graph(Q, out / "worked_example", params={"a": a, "b": b})
    Q.backward(gradient=tensor([1.0, 1.0]))
    print(
        f"again (retain_graph=True the first time): a.grad = {a.grad.tolist()}, "
        f"b.grad = {b.grad.tolist()}"
    )
    try:
        Q.backward(gradient=tensor([1.0, 1.0]))
    except RuntimeError as exc:
        print(f"a third time -> RuntimeError: {str(exc)[:60]}...")
    print("DAG picture: " + ", ".join(str(f) for f in files))

    print("\nd = (3*a**2).mean() at a = [2]:")
    a = tensor([2.0], requires_grad=True)
    d = (3 * a**2).mean()
    chain, node = [], d.grad_fn
    while node is not None:
        chain.append(node.name())
        node = node.next_functions[0][0] if node.next_functions else None
    print("  " + " -> ".join(chain))
    d.backward()
    print(f"  a.grad = {a.grad.tolist()}")

    print("\nMasking a layer's weights with a hook (their gradient is 0, SGD leaves them alone):")
    W = tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
    mask = np.array([[1.0, 0.0], [1.0, 1.0]])
    handle = W.register_hook(lambda g: g * mask)
    loss = ((W @ tensor([1.0, 2.0])).tanh() ** 2).sum()
    loss.backward()
    before = W.detach().numpy().copy()
    with no_grad():
        W -= 0.1 * W.grad
    print(f"  W.grad = {W.grad.tolist()}")
    print(f"  masked weight W[0,1] unchanged: {W.data[0, 1] == before[0, 1]}")
    handle.remove()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
