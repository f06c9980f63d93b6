"""What ``python -m trackformers.train`` is built from, one concept per module.

* :mod:`~trackformers.training.build`: config → (datamodule, LightningModule, trainer).
* :mod:`~trackformers.training.final_checkpoint`: ``last.ckpt`` at the end of ``fit``.
* :mod:`~trackformers.training.summary`: summary.json, efficiency plots, wandb summary and the
  lines that say where a run's results are.

The callbacks are in :mod:`trackformers.callbacks` (and :mod:`trackformers.resume`,
:mod:`trackformers.models.tuning`); the entry point that runs them all is
:mod:`trackformers.train`.
"""
