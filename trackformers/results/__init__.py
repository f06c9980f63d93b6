"""What an evaluation produces and how it becomes the published results.

outputs    the evaluation directory: metrics.json, tables, breakdowns, plots, report
wandb_log  the evaluation logged to the training run's wandb run
table      the results table from evaluation directories (``python -m trackformers.results``)
export     the shareable weights-only checkpoint (``python -m trackformers.export``)
"""
