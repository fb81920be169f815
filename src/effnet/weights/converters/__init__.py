"""One converter per peer's key layout.

Each module exposes `SOURCE` (the name users pass as `source=`) and `convert(state_dict)`, which
renames keys into effnet's layout from the keys and shapes alone, or raises WeightsError naming
the first keys it does not recognise. `matching` records which effnet model fits each peer model.
"""
