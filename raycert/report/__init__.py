"""The offline HTML report of persisted studies: ``page`` (the page), ``figures``, ``reading``.

It reads study folders through ``raycert.studyfolder`` only and imports neither torch nor ray.
"""
