"""Side-by-side speed of crossgrad's engine against PyTorch, hand-written numpy and JAX.

Run from the repository root (1-2 minutes; the 1e6 chain needs up to ~7.5 GB of memory):

    .venv/bin/python -m benchmarks.engine_bench      # or: make bench
    .venv/bin/python -m benchmarks.engine_bench --torch-threads 2

Everything is measured in one process: rounds that run each implementation in turn (so the machine's
fast and slow phases hit all alike), medians over rounds, gc off inside timed calls (as timeit does).
The small chains run a second time with the garbage collector on and the heap (torch and jax loaded)
as it is, as in a user's process: the Python objects an op allocates then cost collector passes,
which gc-off timing hides. Absolute times vary by up to ~1.7x between runs on these machines:
compare the ratios printed here. torch runs on
one thread by default, like the engine's numpy: with two threads on a 2-core machine, any other busy
process stalls torch's thread pool by 10-400x (JAX keeps its default threads).

1. Chain of 1000 elementwise float64 ops (x*1.0001, x+0.0001, tanh, repeated), forward + backward,
   µs per op: engine vs torch autograd vs hand-written numpy (tanh outputs kept, backprop by hand).
   Targets: shape (4,) engine/torch <= 1.0 (gc off and on); shape (1e6,) engine/numpy <= 1.15.
2. MLP gradient (forward + backward, no parameter update): x 64x32 @ W1 32x64, tanh, @ W2 64x10,
   mean cross-entropy (log_softmax + nll) on integer targets, float64. Target: engine/torch <= 1.0.
3. Full Jacobian of tanh(A @ x), A n x n, n = 10, 100, 500: engine batched (vectorize=True) and row
   by row (vectorize=False) vs torch.autograd.functional.jacobian and jax.jit(jax.jacrev) at steady
   state. Target: n=100 engine batched / torch vectorize=True <= 1.0.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import jax
import numpy as np
import torch
from crossgrad import engine as cg

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402 - after float64 is switched on

CHAIN_LENGTH = 1000
CHAIN_MUL, CHAIN_ADD = 1.0001, 0.0001
SKIP_CALLS_LONGER_THAN_S = 20.0

Timings = dict[str, float | None]


# ---------------------------------------------------------------------------------------- timing
def measure(fns: dict[str, Callable], budget_s: float, rounds: int = 7, gc_on: bool = False) -> Timings:
    """Median seconds per call of each fn (None if its warm-up call took over SKIP_CALLS_LONGER_THAN_S).

    Each round runs every fn in turn for a block of back-to-back calls (about budget_s / (rounds x
    fns) seconds, at least one call, sized from the warm-up call); one sample is a block's time per
    call. Blocks keep caches warm for the small cases, rounds spread the machine's phases evenly.
    """
    with nullcontext() if gc_on else quiet_gc():
        first = {name: _timed(fn) for name, fn in fns.items()}
        live = {name: fn for name, fn in fns.items() if first[name] <= SKIP_CALLS_LONGER_THAN_S}
        block_s = budget_s / (rounds * max(1, len(live)))
        calls = {name: max(1, round(block_s / first[name])) for name in live}
        samples: dict[str, list[float]] = {name: [] for name in live}
        for _ in range(rounds):
            for name, fn in live.items():
                samples[name].append(_timed(fn, calls[name]) / calls[name])
    return {name: statistics.median(samples[name]) if name in live else None for name in fns}


@contextmanager
def quiet_gc() -> Iterator[None]:
    """gc off while timing. What existed before is frozen, so the (untimed) collection after each
    block, for the cycles torch and jax leave behind, is quick and leaves the caches mostly alone."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def _timed(fn: Callable[[], object], calls: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    gc.collect()
    return elapsed


# -------------------------------------------------------------------------------------- printing
def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None else num / den


def fmt(value: float | None, digits: int = 2) -> str:
    return "skipped" if value is None else f"{value:.{digits}f}"


def verdict(r: float | None, limit: float) -> str:
    if r is None:
        return f"(target <= {limit}: not measured)"
    return f"(target <= {limit}: {'met' if r <= limit else 'MISSED'})"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    for line in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)))


def heading(text: str) -> None:
    print(f"\n{text}\n{'=' * len(text)}")


# ---------------------------------------------------------------------------------------- 1. chain
CHAIN_OPS: tuple[Callable, ...] = (lambda x: x * CHAIN_MUL, lambda x: x + CHAIN_ADD, lambda x: x.tanh())


def autograd_chain(x, ones):
    """Forward + backward through the chain for any tensor type with torch's autograd API."""
    x.grad = None
    y = x
    for i in range(CHAIN_LENGTH):
        y = CHAIN_OPS[i % 3](y)
    y.backward(ones)
    return x.grad


def numpy_chain(x):
    """The same chain by hand: keep every tanh output, then backprop in reverse."""
    saved = []
    y = x
    for i in range(CHAIN_LENGTH):
        if i % 3 == 0:
            y = y * CHAIN_MUL
        elif i % 3 == 1:
            y = y + CHAIN_ADD
        else:
            y = np.tanh(y)
            saved.append(y)
    g = np.ones_like(x)
    for i in reversed(range(CHAIN_LENGTH)):
        if i % 3 == 0:
            g = g * CHAIN_MUL
        elif i % 3 == 2:
            g = g * (1.0 - saved.pop() ** 2)
    return g


def chain_contenders(n: int) -> dict[str, Callable[[], object]]:
    data = np.random.default_rng(0).uniform(-1.0, 1.0, n)
    xe = cg.tensor(data, requires_grad=True)
    xt = torch.tensor(data, requires_grad=True)
    ones_e, ones_t = np.ones(n), torch.ones(n, dtype=torch.float64)
    return {
        "engine": lambda: autograd_chain(xe, ones_e),
        "torch": lambda: autograd_chain(xt, ones_t),
        "numpy": lambda: numpy_chain(data),
    }


def to_numpy(value) -> np.ndarray:
    return np.asarray(value.data if isinstance(value, cg.Tensor) else value)


def check_chain() -> str:
    grads = {name: to_numpy(fn()) for name, fn in chain_contenders(1000).items()}
    agree = ", ".join(f"engine~{k} {np.allclose(grads['engine'], grads[k])}" for k in ("torch", "numpy"))
    return f"gradients agree at shape (1000,): {agree}"


def bench_chain() -> dict[tuple[int, bool], Timings]:
    """Timings by (shape, gc on)."""
    heading(f"1. Chain of {CHAIN_LENGTH} elementwise ops, float64, forward + backward (µs per op)")
    print(check_chain())
    results, rows = {}, []
    cases = ((4, False, 7), (1000, False, 7), (1_000_000, False, 5), (4, True, 7), (1000, True, 7))
    for n, gc_on, rounds in cases:
        t = measure(chain_contenders(n), 3.0, rounds, gc_on)
        results[n, gc_on] = t
        us = {k: v * 1e6 / CHAIN_LENGTH for k, v in t.items()}
        e_t, e_n = ratio(us["engine"], us["torch"]), ratio(us["engine"], us["numpy"])
        target = verdict(e_t, 1.0) if n == 4 else verdict(e_n, 1.15) if n == 1_000_000 else ""
        label = f"({n},) gc on" if gc_on else f"({n},)"
        rows.append([label, fmt(us["engine"]), fmt(us["torch"]), fmt(us["numpy"])])
        rows[-1] += [fmt(e_t), fmt(e_n), fmt(ratio(us["torch"], us["numpy"])), target]
    headers = ["shape", "engine", "torch", "numpy", "engine/torch", "engine/numpy", "torch/numpy", ""]
    print_table(headers, rows)
    return results


# ------------------------------------------------------------------------------------------ 2. MLP
def mlp_loss(cross_entropy, x, y, w1, w2):
    return cross_entropy((x @ w1).tanh() @ w2, y)


def autograd_mlp(cross_entropy, x, y, w1, w2):
    w1.grad = w2.grad = None
    mlp_loss(cross_entropy, x, y, w1, w2).backward()
    return w1.grad, w2.grad


def numpy_mlp(x, y, w1, w2):
    h = np.tanh(x @ w1)
    z = h @ w2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    p[rows, y] -= 1.0
    dz = p / len(y)
    dh = dz @ w2.T
    return x.T @ (dh * (1.0 - h * h)), h.T @ dz


def mlp_contenders() -> dict[str, Callable[[], tuple]]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 32))
    w1 = rng.standard_normal((32, 64)) / np.sqrt(32)
    w2 = rng.standard_normal((64, 10)) / np.sqrt(64)
    y = rng.integers(0, 10, 64)
    xe, w1e, w2e = cg.tensor(x), cg.tensor(w1, requires_grad=True), cg.tensor(w2, requires_grad=True)
    xt, yt = torch.tensor(x), torch.tensor(y)
    w1t, w2t = torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)
    ce_t = torch.nn.functional.cross_entropy
    return {
        "engine": lambda: autograd_mlp(cg.cross_entropy, xe, y, w1e, w2e),
        "torch": lambda: autograd_mlp(ce_t, xt, yt, w1t, w2t),
        "numpy": lambda: numpy_mlp(x, y, w1, w2),
    }


def bench_mlp() -> Timings:
    heading("2. MLP gradient, x 64x32, W1 32x64, tanh, W2 64x10, mean cross-entropy, float64 (µs)")
    fns = mlp_contenders()
    grads = {name: [to_numpy(g) for g in fn()] for name, fn in fns.items()}
    for other in ("torch", "numpy"):
        same = all(np.allclose(a, b) for a, b in zip(grads["engine"], grads[other]))
        print(f"engine gradients (dW1, dW2) match {other}: {same}")
    t = measure(fns, 3.0)
    us = {k: v * 1e6 for k, v in t.items()}
    r = ratio(us["engine"], us["torch"])
    headers = ["engine", "torch", "numpy", "engine/torch", "engine/numpy", ""]
    row = [fmt(us["engine"], 1), fmt(us["torch"], 1), fmt(us["numpy"], 1)]
    print_table(headers, [[*row, fmt(r), fmt(ratio(us["engine"], us["numpy"])), verdict(r, 1.0)]])
    return t


# ------------------------------------------------------------------------------------- 3. Jacobian
def jacobian_contenders(n: int) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(2)
    a, x = rng.standard_normal((n, n)) / np.sqrt(n), rng.standard_normal(n)
    ae, at, aj = cg.tensor(a), torch.tensor(a), jnp.asarray(a)
    xe, xt, xj = cg.tensor(x), torch.tensor(x), jnp.asarray(x)
    jax_jac = jax.jit(jax.jacrev(lambda v: jnp.tanh(aj @ v)))
    torch_jac = torch.autograd.functional.jacobian
    return {
        "engine batched": lambda: cg.jacobian(lambda v: (ae @ v).tanh(), xe, vectorize=True).data,
        "engine rows": lambda: cg.jacobian(lambda v: (ae @ v).tanh(), xe, vectorize=False).data,
        "torch vec": lambda: torch_jac(lambda v: (at @ v).tanh(), xt, vectorize=True),
        "torch rows": lambda: torch_jac(lambda v: (at @ v).tanh(), xt, vectorize=False),
        "jax jit": lambda: jax_jac(xj).block_until_ready(),
        "analytic": lambda: (1.0 - np.tanh(a @ x) ** 2)[:, None] * a,
    }


def check_jacobians(fns: dict[str, Callable[[], object]]) -> str:
    values = {name: np.asarray(fn()) for name, fn in fns.items()}
    ok = [name for name in fns if np.allclose(values[name], values["analytic"])]
    bad = [name for name in fns if name not in ok]
    return f"all agree with the analytic Jacobian: {not bad}" + (f" (differ: {bad})" if bad else "")


def bench_jacobian() -> dict[int, Timings]:
    heading("3. Full Jacobian of tanh(A @ x), A n x n, float64 (ms per Jacobian)")
    results, rows, checks = {}, [], []
    names = ["engine batched", "engine rows", "torch vec", "torch rows", "jax jit", "analytic"]
    for n in (10, 100, 500):
        fns = jacobian_contenders(n)
        jax_first = _timed(fns["jax jit"])  # trace + compile
        checks.append(f"n={n}: {check_jacobians(fns)}")
        t = measure(fns, 4.0)
        results[n] = t
        ms = {k: None if v is None else v * 1e3 for k, v in t.items()}
        r = ratio(ms["engine batched"], ms["torch vec"])
        row = [str(n), *(fmt(ms[k], 3) for k in names), fmt(jax_first * 1e3, 1), fmt(r)]
        rows.append([*row, verdict(r, 1.0) if n == 100 else ""])
    print("\n".join(checks))
    print_table(["n", *names, "jax 1st call", "engine batched/torch vec", ""], rows)
    print("engine rows = cg.jacobian(vectorize=False); torch vec/rows = vectorize=True/False")
    return results


# ----------------------------------------------------------------------------------------- summary
def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other processes keep busy while this one sleeps (Linux /proc/stat; else None)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(seconds)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    return (1.0 - (idle1 - idle0) / max(1, total1 - total0)) * (os.cpu_count() or 1)


def print_load_warning() -> None:
    busy = busy_cores()
    if busy is None:
        return
    print(f"other processes kept {busy:.1f} of {os.cpu_count()} cores busy just before starting")
    if busy > 0.3:
        print("WARNING: a busy machine skews the ratios; multi-threaded torch, jax and BLAS suffer most")


def keep_freed_memory() -> str:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    By default glibc hands the top of its heap back to the OS when it is freed and serves 8 MB
    arrays with fresh mmaps, so a (1e6,) chain's 2.7 GB of saved arrays is faulted in again on the
    next call or not, depending on which small allocation happens to sit at the heap's top. Runs of
    the (1e6,) chain alone read engine/numpy from 0.6 to 1.9 that way, set by small changes in
    allocation order rather than by the arithmetic. With trimming off and no mmap for arrays under
    32 MB, every contender reuses its memory alike and the ratio measures the computation.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "allocator: default (not glibc)"
    m_trim_threshold, m_mmap_threshold = -1, -3
    kept = libc.mallopt(m_trim_threshold, -1) and libc.mallopt(m_mmap_threshold, 32 * 2**20)
    return "allocator: glibc keeps freed memory" if kept else "allocator: default (mallopt refused)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads")
    torch.set_num_threads(parser.parse_args(argv).torch_threads)
    print("crossgrad engine benchmark")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), jax {jax.__version__}"
    )
    print(keep_freed_memory())
    print_load_warning()
    start = time.perf_counter()
    chain, mlp, jac = bench_chain(), bench_mlp(), bench_jacobian()
    heading("Targets (ratios measured in this run)")
    summary = [
        ("chain (4,) engine/torch", chain[4, False], "engine", "torch", 1.0),
        ("chain (4,) engine/torch, gc on", chain[4, True], "engine", "torch", 1.0),
        ("chain (1e6,) engine/numpy", chain[1_000_000, False], "engine", "numpy", 1.15),
        ("MLP engine/torch", mlp, "engine", "torch", 1.0),
        ("Jacobian n=100 engine batched/torch vec", jac[100], "engine batched", "torch vec", 1.0),
    ]
    for label, timings, num, den, limit in summary:
        r = ratio(timings[num], timings[den])
        print(f"{label:<42} {fmt(r):>6}  {verdict(r, limit)}")
    print(f"\ntotal benchmark time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
