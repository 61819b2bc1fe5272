"""Certification: the model zoo, sound margin bounds, verified radii and their certificates.

- ``models``: the architectures the bounds support, and IBP initialization.
- ``bounds``: interval bound propagation (IBP) of the margins, train-mode BatchNorm included.
- ``backward``: the relaxed backward linear pass that CROWN-style bounds run.
- ``linear``: CROWN-IBP and CROWN margin bounds.
- ``slopes``: optimized ReLU lower slopes, the ``alpha-crown-ibp`` verifier's.
- ``verifiers``: the registry of verifiers a radius search may name, and their margin bounds.
- ``bracket``: a batch of open ``Brackets``, and one verifier's false-position search of them.
- ``stages``: a cascade's linear stage made cheap: step up, probe in float32, confirm in float64.
- ``radius``: the largest verified radius per sample, for a verifier or a cascade; re-verification.
- ``sweep``: a radius search of fixed shape (k probes per sample per round), for training on GPUs.
- ``precision``: IEEE float32 (no TF32) while certifying.
- ``certify``: the certificates of a split: per-sample radii, ACR and certified accuracy.
- ``attack``: PGD, set against the certificates.

Nothing here knows about training or studies.
"""
