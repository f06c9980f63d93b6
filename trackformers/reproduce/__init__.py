"""The reproduction of the published results: the one-call physics pipeline (simulate, compile
check, train, export, evaluate, latency, results rows), the table across runs, and the
input-level analyses quoted with them. Scripts in ``benchmarks/`` call these modules.

    physics_run    simulate -> compile check -> train -> export -> evaluate -> latency -> rows
    compile_check  eager vs compiled encoder: loss, gradients, step time
    physics_table  one table from several physics_run folders (docs/results)
    track_spread   spread of a track's hit angles, barrel vs endcap
"""
