"""Writes the data files of crossgrad_examples.yaml (run from anywhere; the files are committed).

python examples/make_example_data.py
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(0)
    # A 3x4 layer: W's entries where mask is 0 are frozen (their gradient is masked to 0 by a hook).
    np.savez(
        HERE / "mlp_layer.npz",
        W=rng.normal(size=(3, 4)),
        b=rng.normal(size=3),
        x=rng.normal(size=4),
        y=rng.normal(size=3),
        mask=np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=np.float64),
    )
    # Gradients of Q = 3a^3 - b^2 at a = [2, 3], b = [6, 4] with cotangent [1, 1], as another
    # framework computed them: dQ/da = 9a^2, dQ/db = -2b.
    np.savez(HERE / "claimed_worked_example.npz", a=[36.0, 81.0], b=[-12.0, -8.0])
    # The same with one wrong entry, as a hand derivation that dropped a term might give.
    np.savez(HERE / "claimed_wrong_entry.npz", a=[36.0, 81.0], b=[-12.0, -8.5])


if __name__ == "__main__":
    main()
