"""Certification: the model zoo, sound margin bounds, verified radii and their certificates.

``models`` (architectures the bounds support), ``bounds`` (interval margin bounds), ``linear``
(CROWN-IBP and CROWN margin bounds), ``radius`` (the largest verified radius of each sample, for
one verifier or a cascade), ``certify`` (the certificates of a split: per-sample radii, ACR and
certified accuracy), ``attack`` (PGD set against the certificates). Nothing here knows about
training, studies or files.
"""
