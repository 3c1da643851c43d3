"""What a preset is: security, parameters, precision, capacity and measured bytes per parameter.

It sits above :mod:`fedx.he.schemes` (the parameters) and :mod:`fedx.he.seal` (the engine that measures
the ciphertext sizes), so that neither imports the other's way back.
"""

from __future__ import annotations

from typing import Any

from . import seal
from .schemes import KINDS, Preset, get_preset


def describe(preset: Preset | str) -> dict[str, Any]:
    """Security, parameters, precision, capacity and bytes per parameter of ``preset``.

    Bytes per parameter are those of the ciphertexts (the blob header adds a few hundred bytes): an
    upload, an aggregate of 10 updates (``aggregate``; at most ``max_additions``) and one of
    ``max_additions`` updates (``aggregate_max``), each with the seeds or ``c1`` (:func:`fedx.he.wire.c1_mode`).

    Parameters
    ----------
    preset : Preset or str
        A preset, or its name (``"bfv-compact"``, ``"ckks"``).
    """
    p = get_preset(preset)
    sizes = seal.engine(p).sizes
    per_value = {kind: p.slots / p.expansion(kind) for kind in KINDS}
    return {
        "name": p.name,
        "scheme": p.scheme.upper(),
        "security_bits": p.security_bits,
        "security": "128-bit classical (HE standard bound on N and the modulus, checked by SEAL)",
        "poly_modulus_degree": p.poly_modulus_degree,
        "coeff_modulus_bits": [q.bit_length() for q in p.coeff_modulus],
        "slots_per_ciphertext": p.slots,
        "max_additions": p.max_additions,
        **p.details(),
        "bytes_per_param": {
            "upload": round(sizes["mean_upload"] / per_value["mean"], 3),
            "aggregate": round(sizes["mean_aggregate"] / per_value["mean"], 3),
            "aggregate_max": round(sizes["mean_aggregate_max"] / per_value["mean"], 3),
            "sum_upload": round(sizes["sum_upload"] / per_value["sum"], 3),
            "sum_aggregate": round(sizes["sum_aggregate"] / per_value["sum"], 3),
        },
    }
