"""Hit filter: head, BCE loss and its label, clustering of the kept hits only, filtered hits
counted as unassigned by the metrics, bad values rejected."""

import math

import numpy as np
import pytest
import torch

from trackformers.cluster import ClusterConfig, assign_tracks, cluster_hits
from trackformers.cluster.filtering import check_threshold, cluster_kept, compact, kept_hits
from trackformers.data.batch import PackedBatch
from trackformers.losses import CombinedLoss, HitFilterLoss, SupConLoss
from trackformers.metrics import evaluate_event
from trackformers.models import ContrastiveHead, Encoder, HitFilterHead, TrackFormer
from trackformers.models.module import TrackFormerModule


def _batch(pt, pid, cu, signal=None):
    n = len(pid)
    targets = {"pt": torch.tensor(pt, dtype=torch.float32)}
    if signal is not None:
        targets["signal"] = torch.tensor(signal)
    return PackedBatch(
        x=torch.zeros(n, 3),
        cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        max_seqlen=max(np.diff(cu)),
        coords=torch.zeros(n, 3),
        particle_id=torch.tensor(pid),
        targets=targets,
    )


def test_head_gives_one_logit_per_hit_and_trackformer_adds_it():
    from trackformers.attention import build

    enc = Encoder(in_features=3, d_model=16, n_heads=2, n_layers=1, attention=build("dense"))
    model = TrackFormer(enc, ContrastiveHead(16, 8), HitFilterHead(16))
    out = model(_batch([1.0] * 5, [1, 1, 2, 2, 0], [0, 3, 5]))
    assert out["filter_logit"].shape == (5,) and out["embedding"].shape == (5, 8)
    assert "filter_logit" not in TrackFormer(enc, ContrastiveHead(16, 8))(
        _batch([1.0] * 5, [1, 1, 2, 2, 0], [0, 3, 5])
    )


def test_loss_label_is_the_signal_target_when_present_else_derived_from_truth():
    # event 0: particle 1 (pt 2, 3 hits) signal, particle 2 (pt 0.5) not, noise not;
    # event 1: particle 1 again (ids are per event) with only 2 hits: not signal
    pid = [1, 1, 1, 2, 2, 2, 0, 1, 1]
    pt = [2.0, 2.0, 2.0, 0.5, 0.5, 0.5, math.nan, 3.0, 3.0]
    batch = _batch(pt, pid, [0, 7, 9])
    loss = HitFilterLoss(pt_min=0.9, min_hits=3)
    assert loss.labels(batch).tolist() == [True] * 3 + [False] * 6
    sig = [False, True, False, True, False, True, False, True, False]
    assert loss.labels(_batch(pt, pid, [0, 7, 9], signal=sig)).tolist() == sig
    logit = torch.zeros(9, requires_grad=True)
    value = loss({"filter_logit": logit}, batch)
    assert value.item() == pytest.approx(math.log(2))
    value.backward()
    assert logit.grad[0] < 0 < logit.grad[4]  # pushed up for signal, down for the rest
    # weighting the positives changes the loss; a confident correct logit gives ~0
    good = torch.tensor([9.0] * 3 + [-9.0] * 6)
    assert loss({"filter_logit": good}, batch).item() < 1e-3
    weighted = HitFilterLoss(pos_weight=3.0)({"filter_logit": torch.zeros(9)}, batch)
    assert weighted.item() > value.item()


@pytest.mark.parametrize(
    "kw",
    [
        {"pos_weight": 0.0},
        {"pos_weight": -1.0},
        {"min_hits": 0},
        {"pt_min": -1.0},
        {"pt_min": math.nan},
    ],
)
def test_loss_bad_values(kw):
    with pytest.raises(ValueError, match="hit_filter"):
        HitFilterLoss(**kw)


def test_negative_loss_weight_is_an_error():
    with pytest.raises(ValueError, match="finite and >= 0"):
        CombinedLoss(
            {"contrastive": SupConLoss(), "hit_filter": HitFilterLoss()}, {"hit_filter": -1.0}
        )


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, math.nan, "0.5", True])
def test_threshold_outside_open_unit_interval_is_an_error(bad):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        check_threshold(bad)
    with pytest.raises(ValueError, match="filter_threshold"):
        ClusterConfig(filter_threshold=bad)
    with pytest.raises(ValueError, match="validation.cluster.filter_threshold"):
        TrackFormerModule(
            torch.nn.Linear(1, 1),
            torch.nn.Identity(),
            validation={"cluster": {"filter_threshold": bad}},
        )


def test_filter_needs_the_models_filter_output():
    with pytest.raises(KeyError, match="filter_logit"):
        kept_hits({"embedding": torch.zeros(3, 2)}, 0.5)
    from trackformers.attention import build

    enc = Encoder(in_features=3, d_model=16, n_heads=2, n_layers=1, attention=build("dense"))
    with pytest.raises(ValueError, match="needs a model with a hit filter"):
        TrackFormerModule(
            TrackFormer(enc, ContrastiveHead(16, 8)),
            torch.nn.Identity(),
            validation={"cluster": {"filter_threshold": 0.5}},
        )


def test_clustering_of_kept_hits_equals_clustering_the_kept_subset():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=gen) * 0.3
    cu = torch.tensor([0, 25, 25, 60], dtype=torch.int32)  # an empty event in the middle
    logit = torch.randn(60, generator=gen)
    keep = kept_hits({"filter_logit": logit}, 0.5)
    assert torch.equal(keep, torch.sigmoid(logit) >= 0.5)
    rows, cuk = compact(keep, cu)
    assert cuk.tolist() == [0, int(keep[:25].sum()), int(keep[:25].sum()), int(keep.sum())]
    labels = cluster_kept(
        lambda a, c: cluster_hits("dbscan", a, c, eps=0.3, min_samples=2), x, cu, keep
    )
    assert (labels[~keep] == -1).all()
    ref = cluster_hits("dbscan", x[rows], cuk, eps=0.3, min_samples=2)
    assert torch.equal(labels[rows], ref)
    # the same through assign_tracks (what evaluate, latency and the Predictor call)
    cfg = {"method": "dbscan", "params": {"eps": 0.3, "min_samples": 2}, "filter_threshold": 0.5}
    out = {"embedding": x, "filter_logit": logit}
    assert torch.equal(assign_tracks(out, cu, cfg), labels)
    # without a threshold every hit is clustered
    unfiltered = assign_tracks(out, cu, {**cfg, "filter_threshold": None})
    assert torch.equal(unfiltered, cluster_hits("dbscan", x, cu, eps=0.3, min_samples=2))


def test_filtered_hits_count_as_unassigned_in_the_metrics():
    """Two reconstructable particles of 4 hits; particle 2's hits are all filtered out, one
    hit of particle 1 too: particle 2 is not found, particle 1 is (3 of 4 > 50 %), and the
    denominators keep every hit and particle."""
    pid = np.array([1, 1, 1, 1, 2, 2, 2, 2, 0], dtype=np.uint64)
    event = {
        "hit_particle_id": pid,
        "hit_weight": np.where(pid > 0, 1 / 8, 0.0),
        "hit_volume_id": np.full(9, 8, dtype=np.int32),
        "part_particle_id": np.array([1, 2], dtype=np.uint64),
        "part_px": np.array([2.0, 2.0]),
        "part_py": np.zeros(2),
        "part_pz": np.zeros(2),
    }
    x = torch.tensor([[0.0]] * 4 + [[5.0]] * 4 + [[9.0]])
    logit = torch.tensor([3.0, 3.0, 3.0, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0])
    cfg = {"method": "dbscan", "params": {"eps": 0.1, "min_samples": 2}, "filter_threshold": 0.5}
    labels = assign_tracks(
        {"embedding": x, "filter_logit": logit}, torch.tensor([0, 9], dtype=torch.int32), cfg
    ).numpy()
    assert (labels[3:] == -1).all() and len(set(labels[:3])) == 1
    m, parts = evaluate_event(event, labels)
    assert m["n_reconstructable"] == 2 and m["n_dm"] == 1 and m["dm_efficiency"] == 0.5
    assert m["n_perfect"] == 0  # particle 1 lost one hit to the filter
    assert parts.set_index("particle_id").loc[2, "dm"] == False  # noqa: E712
    assert m["n_candidates"] == 1 and m["n_fake"] == 0
    assert m["trackml_score"] == pytest.approx(3 / 8)


def test_validation_clusters_only_the_kept_hits():
    val = {"cluster": {"params": {"eps": 0.5, "min_samples": 2}, "filter_threshold": 0.9}}
    module = TrackFormerModule(torch.nn.Linear(1, 1), torch.nn.Identity(), validation=val)
    x = torch.zeros(6, 2)  # one blob: all hits together without a filter
    out = {"embedding": x, "filter_logit": torch.tensor([5.0, 5.0, 5.0, 0.0, 0.0, -5.0])}
    cu = torch.tensor([0, 6], dtype=torch.int32)
    labels = module.cluster(out, cu)
    assert (labels[3:] == -1).all() and len(set(labels[:3].tolist())) == 1
    assert (module.cluster(out, cu, filter_threshold=0.4) >= 0).sum() == 5


# ---- GPU -------------------------------------------------------------------------------------
class _FixedFilterHead(torch.nn.Module):
    """Real head + fixed clustering input and filter logits (graph and eager must agree)."""

    def __init__(self, head, values, logits):
        super().__init__()
        self.head, self.values, self.logits = head, values, logits

    def forward(self, h):
        n = h.shape[0]
        return {**self.head(h), "params": self.values[:n], "filter_logit": self.logits[:n]}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_filter_equals_eager_compaction():
    """The graph path drops rejected hits through DBSCAN's valid mask, the eager path by
    compaction (assign_tracks): the same labels, and rejected hits get none."""
    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.inference import Predictor
    from trackformers.models import RegressorHead

    torch.manual_seed(0)
    # a backend whose plan and kernels run without host syncs (dense attention reads the
    # event boundaries on the host, so a Predictor with it refuses CUDA graphs)
    kw = {"mask": "cluster", "group_size": 64, "sector_size": 1024}
    enc = Encoder(3, 32, 2, 2, attention="fused", attention_kwargs=kw)
    model = TrackFormer(enc, RegressorHead(32, 4)).cuda()
    values = torch.zeros(12288, 4, device="cuda")
    logits = torch.zeros(12288, device="cuda")
    model.head = _FixedFilterHead(model.head, values, logits)
    cfg = {
        "method": "dbscan",
        "input": "params",
        "params": {"eps": 0.05, "min_samples": 3},
        "filter_threshold": 0.5,
    }
    pred = Predictor(model, cfg, bucket=4096)
    eager = Predictor(model, cfg, cuda_graphs=False)
    for i, n in enumerate([5000, 6100, 9000]):
        batch = synthetic_batch([n], seed=i).to("cuda")
        pid = batch.particle_id.cpu().numpy()
        rng = np.random.default_rng(i)
        centre = rng.normal(size=(pid.max() + 1, 4)) * 2
        pts = centre[pid] + rng.normal(size=(n, 4)) * 0.01
        values.zero_()
        values[:n] = torch.from_numpy(pts.astype(np.float32)).cuda()
        logits.zero_()
        logits[:n] = torch.from_numpy(rng.normal(size=n).astype(np.float32)).cuda()
        got = pred.predict(batch.x, batch.coords)
        ref = eager.predict(batch.x, batch.coords)
        assert torch.equal(got.labels, ref.labels), n
        assert (got.labels[logits[:n] < 0] == -1).all() and int(got.n_tracks) > 0
