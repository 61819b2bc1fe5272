"""Certification: the model zoo, interval bound propagation and verified certified radii.

``models`` (architectures the bounds support), ``bounds`` (sound interval margin bounds),
``certify`` (the verified-radius search, per-sample certificates and ACR). Nothing here knows
about training, studies or files.
"""
