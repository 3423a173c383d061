"""mastr: portfolio valuation and real-time aggregation on palm.

The pure core (:mod:`.schema`, :mod:`.pricing`, :mod:`.generate`,
:mod:`.aggregate`) does not import palm; the distributed parts do.
"""
