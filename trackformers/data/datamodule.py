"""LightningDataModule over native ROOT files (or freshly generated events), giving PackedBatches.

Configured by conf/data/*.yaml (``hydra.utils.instantiate(cfg.data)``):

    dm = TrackDataModule(path="data/demo", max_tokens=20_000, num_workers=2,
                         features={"features": ["x", "y", "z"], "targets": ["eta", ...]})
    dm.setup("fit"); batch = next(iter(dm.train_dataloader()))     # PackedBatch

Splits are by event id (``split_of``): no event is in two splits. Training batches are
shuffled with ``seed`` (chunk order and events inside chunks, new order every epoch);
validation and test batches come in file order. ``pin_memory`` defaults to CUDA availability.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from trackformers.data.augment import AugmentConfig
from trackformers.data.binning import fit_class_bins, num_classes
from trackformers.data.cache import CachedEventStream, build_cache
from trackformers.data.dataset import SPLITS, NativeEventStream
from trackformers.data.features import FeatureConfig
from trackformers.data.provenance import check_one_setting, check_resume, simulation_kind
from trackformers.data.reader import DEFAULT_CHUNK_BYTES, list_files


def _resolve(path: str | os.PathLike) -> Path:
    """Relative paths are taken from the directory the command was started in (Hydra-safe)."""
    p = Path(path)
    if p.is_absolute():
        return p
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd) / p
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return p


class TrackDataModule(L.LightningDataModule):
    """Train / val / test loaders of PackedBatches (see the module docstring).

    Args:
        path: native ROOT file(s) or directories (relative to the launch directory).
        source: ``native`` (files) or ``stream`` (events simulated on the fly, ``stream``).
        features: input features and targets (``FeatureConfig`` or its dict).
        max_tokens: hits per batch (token budget).
        max_events_per_batch: cap on the events of one batch (None: none).
        val_fraction: share of events (by event id) in the validation split.
        test_fraction: share of events in the test split.
        split_seed: seed of the split by event id.
        seed: seed of the training shuffle.
        num_workers: DataLoader worker processes.
        pin_memory: pinned host memory (None: when CUDA is available).
        persistent_workers: keep workers between epochs.
        chunk_bytes: uncompressed bytes read per chunk.
        on_error: ``raise`` or ``skip`` bad input (``trackformers.data.errors``).
        stream: settings of a streamed dataset (``source=stream``).
        class_bins: ``{"n_bins": {...}}`` fitted in setup, or edges used as given.
        num_features: restated model input size, checked against the features.
        num_params: restated regression target count, checked.
        num_classes: restated class count, checked.
        cache_dir: featurize once into a memory-mapped cache there (None: no cache).
        augment: random phi rotation / z reflection of training events.
    """

    def __init__(
        self,
        path: str | Sequence[str] = "data/demo",
        source: str = "native",
        features: dict | FeatureConfig | None = None,
        max_tokens: int = 20_000,
        max_events_per_batch: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        on_error: str = "raise",
        stream: dict | None = None,
        class_bins: dict | None = None,
        num_features: int | None = None,
        num_params: int | None = None,
        num_classes: int | None = None,
        cache_dir: str | None = None,
        augment: dict | None = None,
    ):
        """``num_features/num_params/num_classes`` restate what the model configs read
        (``${data.num_features}``...); they are checked against the feature configuration."""
        super().__init__()
        if source not in ("native", "stream"):
            raise ValueError(f"data source must be 'native' or 'stream', got {source!r}")
        self.path = path
        self.source = source
        self.features = (
            features if isinstance(features, FeatureConfig) else FeatureConfig.from_dict(features)
        )
        if class_bins is not None:  # {"n_bins": {...}} is fitted in setup(); edges used as given
            self.class_bin_spec = dict(class_bins)
        else:
            self.class_bin_spec = None
        self._check_sizes(num_features, num_params, num_classes)
        self.max_tokens = int(max_tokens)
        self.max_events_per_batch = max_events_per_batch
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed, self.seed = int(split_seed), int(seed)
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.chunk_bytes = int(chunk_bytes)
        self.on_error = on_error
        self.stream_cfg = dict(stream or {})
        self.cache_dir = cache_dir  # set: featurize once into a memory-mapped cache (cache.py)
        # random phi rotation / z reflection of the training events (data/augment.py)
        self.augment = AugmentConfig.from_dict(augment)
        if self.augment.enabled and (cache_dir is not None or source != "native"):
            raise ValueError(
                f"data.augment {self.augment} transforms events as they are read from files: "
                f"it needs source=native and cache_dir=null (got source={source!r}, "
                f"cache_dir={cache_dir!r})"
            )
        self.datasets: dict[str, object] = {}
        self.files: list[Path] = []
        self.simulation: dict | None = None  # settings the data was simulated with (provenance)

    def state_dict(self) -> dict:
        """Saved in checkpoints: the simulation settings of the data (checked on resume)."""
        return {"simulation": self.simulation}

    def load_state_dict(self, state: dict) -> None:
        """Refuse to resume a run on data simulated with other settings (e.g. new defaults)."""
        check_resume(state.get("simulation"), self.simulation)

    def _check_sizes(self, n_feat, n_params, n_classes) -> None:
        f = self.features
        if n_feat is not None and int(n_feat) != f.num_features:
            raise ValueError(
                f"data.num_features={n_feat} but features.features lists "
                f"{f.num_features}: {list(f.features)}"
            )
        if n_params is not None and int(n_params) != len(f.targets):
            raise ValueError(
                f"data.num_params={n_params} but features.targets lists "
                f"{len(f.targets)}: {list(f.targets)}"
            )
        if n_classes is not None:
            spec = self.class_bin_spec
            if spec is None:
                raise ValueError(f"data.num_classes={n_classes} needs data.class_bins")
            if "edges" in spec:
                expect = int(np.prod([len(e) + 1 for e in spec["edges"].values()]))
            else:
                n_bins = spec.get("n_bins", 8)
                params = spec.get("params", ("eta", "phi", "q_over_pt"))
                per = [n_bins if isinstance(n_bins, int) else n_bins[p] for p in params]
                expect = int(np.prod(per))
            if int(n_classes) != expect:
                raise ValueError(f"data.num_classes={n_classes} but class_bins give {expect}")

    # ---- properties used to build models ------------------------------------------------
    @property
    def num_features(self) -> int:
        """Input features per hit (the model's ``in_features``)."""
        return self.features.num_features

    @property
    def target_names(self) -> tuple[str, ...]:
        """Names of the regression targets."""
        return self.features.targets

    @property
    def num_params(self) -> int:
        """Number of regression targets."""
        return len(self.features.targets)

    @property
    def num_classes(self) -> int | None:
        """Number of joint parameter classes (None without class bins)."""
        bins = self.features.class_bins
        return None if bins is None else num_classes(bins)

    # ---- lifecycle ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the split datasets: find the files, check that they share one simulation
        setting, fit the class bins (or set up the streamed datasets).

        Args:
            stage: Lightning stage (all splits are built whatever it is).
        """
        if self.datasets:
            return
        if self.source == "stream":
            self._setup_stream()
            return
        spec = [self.path] if isinstance(self.path, (str, os.PathLike)) else list(self.path)
        self.files = list_files([_resolve(p) for p in spec])
        self.simulation = check_one_setting(self.files)  # never a mix of simulation settings
        if self.class_bin_spec is not None:
            self._fit_class_bins()
        if self.cache_dir is not None:
            self._setup_cache()
            return
        for split in SPLITS:
            ds = NativeEventStream(
                self.files,
                self.features,
                chunk_bytes=self.chunk_bytes,
                on_error=self.on_error,
                augment=self.augment if split == "train" and self.augment.enabled else None,
                **self._split_kwargs(split),
            )
            ds.plan()  # open the files once here, not in every worker
            self.datasets[split] = ds

    def _split_kwargs(self, split: str) -> dict:
        """Split, shuffling and batching settings shared by the file and cache streams."""
        return dict(
            max_tokens=self.max_tokens,
            split=split,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            shuffle=split == "train",
            seed=self.seed,
            max_events_per_batch=self.max_events_per_batch,
        )

    def _setup_cache(self) -> None:
        path = build_cache(
            self.files, self.features, _resolve(self.cache_dir), self.chunk_bytes, self.on_error
        )
        for split in SPLITS:
            self.datasets[split] = CachedEventStream(path, **self._split_kwargs(split))

    def _setup_stream(self) -> None:
        """Datasets of freshly generated events (trackformers.sim.stream), no files."""
        # the simulation package (numba kernels, detector) loads only for a streamed dataset
        from trackformers.data.streaming import default_settings, generated_datasets

        cfg = dict(self.stream_cfg)
        unknown = set(cfg) - {"settings", "process", "n_train", "n_val", "n_test"}
        if unknown:
            raise ValueError(f"unknown data.stream keys {sorted(unknown)}")
        settings = cfg.get("settings") or default_settings(cfg.get("process", "gun"))
        self.simulation = simulation_kind(settings)

        def make(features: FeatureConfig) -> dict:
            return generated_datasets(
                settings,
                features,
                self.max_tokens,
                int(cfg.get("n_train", 1000)),
                int(cfg.get("n_val", 100)),
                int(cfg.get("n_test", 100)),
                self.max_events_per_batch,
            )

        if self.class_bin_spec is not None:
            self._fit_class_bins(lambda probe: make(probe)["train"])
        self.datasets = make(self.features)

    def _fit_class_bins(self, make_train=None) -> None:
        """Quantile-balanced bins from the training split (up to ``max_hits`` hits)."""
        spec = self.class_bin_spec
        if "edges" in spec:
            self.features.class_bins = {k: np.asarray(v) for k, v in spec["edges"].items()}
            return
        n_bins = spec.get("n_bins", 8)
        params = tuple(spec.get("params", ("eta", "phi", "q_over_pt")))
        max_hits = int(spec.get("max_hits", 2_000_000))
        probe = FeatureConfig(
            features=("x",),
            volumes=self.features.volumes,
            drop_noise=self.features.drop_noise,
            targets=params,
            target_pt_min=self.features.target_pt_min,
            bz=self.features.bz,
        )
        if make_train is not None:
            ds = make_train(probe)
        else:
            ds = NativeEventStream(
                self.files,
                probe,
                max_tokens=1_000_000,
                split="train",
                val_fraction=self.val_fraction,
                test_fraction=self.test_fraction,
                split_seed=self.split_seed,
                chunk_bytes=self.chunk_bytes,
                on_error=self.on_error,
            )
        cols: list[np.ndarray] = []
        seen = 0
        for batch in ds:
            valid = batch.targets["valid"].numpy()
            cols.append(batch.targets["params"].numpy()[valid])
            seen += int(valid.sum())
            if seen >= max_hits:
                break
        values = np.concatenate(cols) if cols else np.zeros((0, len(params)))
        self.features.class_bins = fit_class_bins(
            {p: values[:, j] for j, p in enumerate(params)}, n_bins
        )

    def _loader(self, split: str) -> DataLoader:
        if not self.datasets:
            self.setup()
        ds = self.datasets[split]
        if isinstance(ds, DataLoader):
            return ds
        gen = torch.Generator().manual_seed(self.seed)  # per-epoch worker seeds, reproducible
        return DataLoader(
            ds,
            batch_size=None,  # the dataset yields whole PackedBatches
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=gen,
        )

    def train_dataloader(self) -> DataLoader:
        """Loader of the training split (shuffled, augmented when configured)."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Loader of the validation split (file order)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Loader of the test split (file order)."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Loader of the test split (prediction runs on it)."""
        return self._loader("test")
