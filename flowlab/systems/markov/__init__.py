"""System ``markov``: Local-to-Global (Makkuva et al., NeurIPS 2024), MODELS.md sections 1-5.

A single-layer transformer on a binary first-order Markov chain (p, q) reduced to the canonical
parameters (e, w, a, b), and k-state chains. Submodules are imported where used (this package
is imported by ``flowlab --help``).
"""
