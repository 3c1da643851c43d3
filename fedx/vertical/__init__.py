"""Vertical federation: parties that hold different columns of the same people.

A vertical run starts with subject identification: the parties find the people they share by private set
intersection (:mod:`fedx.vertical.psi`, on ids normalised by :mod:`fedx.vertical.ids`), and every party orders
the shared rows the same way by a keyed hash, so that no one needs a plaintext list of shared ids. The label
party, which holds the target, and the feature parties then fit a model on those rows: the exact log-link GLMs of :mod:`fedx.vertical.glm_protocol`.

Submodules are imported on use; this package imports nothing eagerly.
"""
