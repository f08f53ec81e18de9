"""Training: the recipe format, data streams, the Lightning module and trainer plug-ins.

The entry point is :mod:`audiodiff.train` (``audiodiff train RECIPE.yaml``).

- :mod:`.recipe`: strict typed recipe (``Recipe``, ``load_recipe``, ``apply_overrides``).
- :mod:`.data`: datasets of a recipe, the resumable ``StepBatchSampler``, DDP sharding.
- :mod:`.module`: ``EnhancementModule``, ``ema_update`` (scores with ``audiodiff.metrics``).
- :mod:`.callbacks`: ``AtomicCheckpointIO``, ``DataOrder``.
"""
