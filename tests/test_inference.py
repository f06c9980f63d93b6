"""trackformers.inference: Predictor (eager on CPU, CUDA graphs on GPU), track counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trackformers.attention.synthetic import synthetic_batch
from trackformers.cluster import assign_tracks
from trackformers.inference import Predictor, forward_batch, track_counts
from trackformers.models import ContrastiveHead, Encoder, HitFilterHead, RegressorHead, TrackFormer


class FixedHead(torch.nn.Module):
    """Runs the real head, returns fixed per-hit outputs (clustering input independent of
    the matmul shapes, so graph and eager clusterings must agree label for label)."""

    def __init__(self, head, values: torch.Tensor):
        super().__init__()
        self.head, self.values = head, values

    def forward(self, h):
        out = self.head(h)
        return {**out, "params": self.values[: h.shape[0]]}


def track_like(pid: np.ndarray, rows: int, seed: int = 0) -> torch.Tensor:
    """(rows, 4) points scattered around a per-particle centre; rows beyond pid: zeros."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(pid.max() + 1, 4)) * 2
    x = np.zeros((rows, 4), np.float32)
    x[: len(pid)] = centre[pid] + rng.normal(size=(len(pid), 4)) * 0.01
    return torch.from_numpy(x)


def small_model(attention="dense", **kw):
    torch.manual_seed(0)
    return TrackFormer(
        Encoder(3, 32, 2, 2, attention=attention, attention_kwargs=kw), RegressorHead(32, 4)
    )


CFG = {"method": "dbscan", "input": "params", "params": {"eps": 0.05, "min_samples": 3}}


def test_track_counts():
    labels = torch.tensor([3, -1, 0, 3, 0, 3, 1, 2, -1])
    counts, n = track_counts(labels)
    assert counts.tolist() == [2, 1, 1, 3, 0, 0, 0, 0, 0] and int(n) == 4
    counts, n = track_counts(torch.full((4,), -1))
    assert counts.tolist() == [0, 0, 0, 0] and int(n) == 0


def test_predictor_cpu_equals_forward_and_clustering():
    batch = synthetic_batch([700])
    model = small_model()
    model.head = FixedHead(model.head, track_like(batch.particle_id.numpy(), 700))
    pred = Predictor(model, CFG)
    assert pred.prepare([(batch.x, batch.coords)]) == []  # no graphs to capture on a CPU
    tracks = pred.predict(batch.x, batch.coords)  # CPU: eager
    out, plan = forward_batch(model, batch)
    ref = assign_tracks(out, batch.cu_seqlens, CFG, plan)
    assert torch.equal(tracks.labels, ref) and int(tracks.n_tracks) == int(ref.max()) + 1 > 50
    assert int(tracks.counts.sum()) == int((ref >= 0).sum())
    assert torch.equal(tracks.counts[: int(tracks.n_tracks)], torch.bincount(ref[ref >= 0]))


def test_compiled_forward_regrouping_equals_model():
    from trackformers.inference.compiled import CompiledForward, supported

    batch = synthetic_batch([400, 250])
    model = small_model().eval()
    out, plan = forward_batch(model, batch)
    for chunk in (0, 128, 1000):  # rows of the feed-forward at a time (1000 > N: one chunk)
        fwd = CompiledForward(model, compile=False, ffn_chunk=chunk)
        got, _ = forward_batch(model, batch, plan, forward=fwd)
        assert got.keys() == out.keys()
        for k in out:
            torch.testing.assert_close(got[k], out[k], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ffn_chunk must be >= 0"):
        CompiledForward(model, ffn_chunk=-1)
    # the input encoding and the hit filter go through the regrouped forward too
    names = ["x", "y", "z"]
    posenc = dict(fields=["x", "z"], dim_per_feature=4, alpha=10.0)
    rich = TrackFormer(
        Encoder(3, 32, 2, 2, posenc=posenc, feature_names=names),
        ContrastiveHead(32, 8),
        HitFilterHead(32),
    ).eval()
    out, plan = forward_batch(rich, batch)
    got, _ = forward_batch(rich, batch, plan, forward=CompiledForward(rich, compile=False))
    assert got.keys() == out.keys() == {"hidden", "embedding", "filter_logit"}
    for k in out:
        torch.testing.assert_close(got[k], out[k], rtol=1e-5, atol=1e-5)
    swiglu = TrackFormer(Encoder(3, 32, 2, 1, ffn="swiglu"), RegressorHead(32, 4))
    geo = TrackFormer(Encoder(3, 32, 2, 1, geo_bias=dict(r_min=0.05)), RegressorHead(32, 4))
    assert supported(model) and not supported(swiglu) and not supported(geo)
    with pytest.raises(ValueError, match="LayerNorm"):
        CompiledForward(swiglu)


def test_predictor_rejects_bad_input():
    with pytest.raises(ValueError, match="need x"):
        Predictor(small_model(), CFG).predict(torch.zeros(5, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="bucket"):
        Predictor(small_model(), CFG, bucket=0)


def test_predictor_from_checkpoint(tmp_path):
    from test_evaluate_cli import make_ckpt, run_config

    from trackformers.data.synthetic import helix_events

    cfg = run_config(
        {"_target_": "trackformers.models.heads.ContrastiveHead", "embed_dim": 8}, str(tmp_path)
    )
    pred = Predictor.from_checkpoint(make_ckpt(tmp_path, cfg), device="cpu")
    assert pred.cfg.method == "dbscan" and pred.cfg.input == "embedding"  # the run's validation
    event = helix_events(1, seed=1, n_particles=10)[0]
    tracks = pred.predict_event(event)
    n = len(event["hit_x"])
    assert tracks.labels.shape == (n,) and tracks.labels.dtype == torch.int64
    assert int(tracks.counts.sum()) == int((tracks.labels >= 0).sum())


# ---- GPU -------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("method", "compile", "amp"),
    [
        ("dbscan", False, "bf16"),
        ("dbscan_plan", False, "bf16"),
        ("dbscan", True, "bf16"),
        ("window", False, "bf16"),
        ("dbscan_plan", True, "fp16"),
    ],
)
def test_cuda_graph_predict_equals_eager(method, compile, amp):
    sizes = [5000, 6100, 9000, 5000]  # two events in one bucket, one in another, a repeat
    model = small_model("fused", mask="cluster", group_size=64, sector_size=1024).cuda()
    values = torch.zeros(12288, 4, device="cuda")
    model.head = FixedHead(model.head, values)
    cfg = {**CFG, "method": method}
    if method == "window":  # dbscan_plan in a phi window built inside the graph
        cfg = {
            **CFG,
            "method": "dbscan_plan",
            "params": {**CFG["params"], "neighbourhood": "window", "window": 256},
        }
    chunk = 2048 if compile and amp == "fp16" else 0  # the feed-forward in row chunks
    pred = Predictor(model, cfg, bucket=4096, compile=compile, amp=amp, ffn_chunk=chunk)
    pred.keep_outputs = True  # the "hidden" output is compared below
    eager = Predictor(model, cfg, cuda_graphs=False, amp=amp)
    for i, n in enumerate(sizes):
        batch = synthetic_batch([n], seed=i).to("cuda")
        values.zero_()
        values[:n] = track_like(batch.particle_id.cpu().numpy(), n, seed=i).cuda()
        got = pred.predict(batch.x, batch.coords)
        ref = eager.predict(batch.x, batch.coords)
        assert torch.equal(got.labels, ref.labels), (method, n)
        assert torch.equal(got.counts, ref.counts) and int(got.n_tracks) > n // 20
        # the real head's output of the padded graph equals the eager one (bf16 rounding)
        g = pred._graphs[(n // 4096 + 1) * 4096]
        out, _ = forward_batch(model, batch, amp=amp)
        torch.testing.assert_close(g.out["hidden"][:n], out["hidden"], atol=5e-2, rtol=5e-2)
    assert sorted(pred._graphs) == [8192, 12288]


@pytest.mark.gpu
def test_prepare_captures_largest_first_and_predicts_exactly():
    model = small_model("fused", mask="cluster", group_size=64, sector_size=1024).cuda()
    values = torch.zeros(12288, 4, device="cuda")
    model.head = FixedHead(model.head, values)
    pred = Predictor(model, CFG, bucket=4096)
    eager = Predictor(model, CFG, cuda_graphs=False)
    batches = [synthetic_batch([n], seed=i).to("cuda") for i, n in enumerate([5000, 9000])]
    captured = []
    real = pred._capture
    pred._capture = lambda g: (captured.append(g.size), real(g))
    assert pred.prepare([(b.x, b.coords) for b in batches]) == [8192, 12288]
    assert captured == [12288, 8192]  # largest first
    for i, b in enumerate(batches):
        n = b.num_hits
        values.zero_()
        values[:n] = track_like(b.particle_id.cpu().numpy(), n, seed=i).cuda()
        assert torch.equal(pred.predict(b.x, b.coords).labels, eager.predict(b.x, b.coords).labels)
    assert captured == [12288, 8192]  # predict reused the prepared graphs
    from trackformers.inference.latency import predictor_timeline

    steps = predictor_timeline(pred, batches, repeat=1)
    assert list(steps) == ["filled", "replayed", "flags read", "counted", "read back", "total"]
    assert steps["total"]["gpu_ms"] >= steps["replayed"]["gpu_ms"] > 0 and pred.trace is None


@pytest.mark.gpu
def test_graph_step_is_sync_free():
    from trackformers.inference.predictor import _sync_free

    batch = synthetic_batch([3000]).to("cuda")
    model = small_model("fused", mask="cluster", group_size=64, sector_size=1024).cuda()
    pred = Predictor(model, CFG)
    pred.predict(batch.x, batch.coords)  # captures (the step was checked sync-free first)
    g = next(iter(pred._graphs.values()))
    assert pred.plan_in_graph  # the plan builders' capturable path is taken in the graph
    plan = model.encoder.build_plan(g.batch())  # eager plan build: it may sync (validation)
    assert _sync_free(lambda: pred._step(g, plan))  # everything after it must not
    assert not _sync_free(lambda: torch.zeros(1, device="cuda").item())


def test_predictor_argmax_cpu():
    from trackformers.models import ClassifierHead

    batch = synthetic_batch([300])
    torch.manual_seed(1)
    model = TrackFormer(Encoder(3, 32, 4, 1), ClassifierHead(32, 500))
    cfg = {"method": "argmax", "input": "logits", "params": {}}
    tracks = Predictor(model, cfg).predict(batch.x, batch.coords)
    out, _ = forward_batch(model, batch)
    ref = out["logits"].argmax(1)
    assert torch.equal(tracks.labels, ref) and tracks.counts.shape == (500,)
    assert int(tracks.n_tracks) == len(torch.unique(ref)) >= 2


@pytest.mark.gpu
def test_cuda_graph_argmax():
    from trackformers.models import ClassifierHead

    batch = synthetic_batch([3000]).to("cuda")
    torch.manual_seed(1)
    enc = Encoder(3, 32, 2, 1, attention="fused", attention_kwargs={"mask": "cluster"})
    model = TrackFormer(enc, ClassifierHead(32, 5000)).cuda()
    cfg = {"method": "argmax", "input": "logits", "params": {}}
    got = Predictor(model, cfg).predict(batch.x, batch.coords)
    ref = Predictor(model, cfg, cuda_graphs=False).predict(batch.x, batch.coords)
    assert (got.labels == ref.labels).float().mean() > 0.99  # bf16 GEMMs of other shapes
    assert got.counts.shape == (5000,) and int(got.counts.sum()) == 3000
