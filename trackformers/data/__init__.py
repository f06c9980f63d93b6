"""trackformers.data — native ROOT events in, packed batches out.

Kept import-light (the simulation imports ``trackformers.data.schema``); import submodules:

    reader      iter_chunks / iter_events / iter_awkward / read_events / read_metadata
    validate    checks and counted repairs (errors.DataError, errors.DataRepairWarning)
    features    FeatureConfig, hit_features, hit_targets, particle_parameters
    fastpath    numba loops of the hot path: hit -> particle join, helix parameters, targets
    projections project_part2 (barrel R = 91 mm, endcaps z = +-920 mm, candidate vertex z)
    binning     quantile-balanced parameter bins, joint_class
    packing     pack_events, featurize, token_budget_batches, TokenBudgetBatchSampler,
                pad_packed / unpad
    dataset     NativeEventStream, EventListDataset, PackCollate, split_of
    sharding    deal_events: equal shares of a pass's events for DDP ranks, then workers
    cache       build_cache, CachedEventStream (memory-mapped preprocessed events)
    streaming   GeneratedBatchStream (events simulated on the fly)
    datamodule  TrackDataModule (conf/data/*.yaml)
    convert     python -m trackformers.data.convert trackml|acts ...
"""
