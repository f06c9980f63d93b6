"""Lightning callbacks of training that only observe a run, one per module.

* :mod:`~trackformers.callbacks.batch_order`: ``BatchOrderLog``, the data order of every
  training batch written to a file (an audit across resumes and ranks).
* :mod:`~trackformers.callbacks.throughput`: ``ThroughputLog``, events/s, hits/s and peak GPU
  memory after a warm-up (kept in summary.json).

Callbacks that own state of their concept live with it: ``LastCheckpoint`` and ``TrainClock``
in :mod:`trackformers.resume` (a run in segments), ``TuneClustering`` in
:mod:`trackformers.models.tuning` (the clustering tuned at the end of fit). All are switched
on in conf/callbacks/default.yaml.
"""
