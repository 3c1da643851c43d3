"""At an institution: decrypt the final model that the ServerApp wrote, and compare it with the truth.

    python -m flower_app.read_model keys final_model.fxb
"""

from __future__ import annotations

import sys

import numpy as np

from fedx.flower import decrypt_arrays
from flower_app import task


def main(argv: list[str]) -> None:
    """Print the decrypted coefficients beside the ones that generated the data."""
    keys, blob = argv
    with open(blob, "rb") as f:
        model = task.from_record(decrypt_arrays(keys, f.read()))
    print("feature  federated  true")
    for i, (got, want) in enumerate(zip(model["coef"], task.TRUE_COEF)):
        print(f"x{i}       {got:+.4f}    {want:+.4f}")
    print(f"intercept {model['intercept'][0]:+.4f}    {task.TRUE_INTERCEPT:+.4f}")
    print(f"max |federated - true| = {np.abs(model['coef'] - task.TRUE_COEF).max():.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
