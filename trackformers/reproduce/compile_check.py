"""Compile check: an experiment's model and loss on one synthetic event, eager and
with ``compile_encoder``: loss and per-parameter gradients compared under bf16 autocast, and a
full training step (forward, backward, AdamW) timed both ways (the first minute of
``physics_run``, whose training then compiles only when the two agree).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from hydra import compose as hcompose
from hydra import initialize_config_dir
from hydra.utils import instantiate

from trackformers.attention.synthetic import synthetic_batch
from trackformers.bench import device_name, sync
from trackformers.models.module import compile_encoder
from trackformers.paths import CONF_DIR


def compose(overrides: list[str]):
    """The training config of conf/train.yaml with Hydra ``overrides``.

    Args:
        overrides: Hydra overrides.

    Returns:
        The composed DictConfig.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hcompose("train", overrides=overrides)


def _train_step(model, loss_fn, batch, opt, device) -> float:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(batch)
    total, _ = loss_fn(out, batch)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return float(total.detach())


def compile_check(
    args,
    attention: str,
    device: torch.device,
    before_timing=None,
    say: Callable[[str], None] = print,
) -> dict:
    """Eager vs compile_encoder on one synthetic event: loss, gradients, step time.

    ``args``: the experiment, model overrides and check sizes of ``physics_run``'s command
    line. ``before_timing()`` runs between the comparison and the timed steps (the simulation
    is waited for there, so that the timing does not share the CPUs with it); ``say`` logs.

    Args:
        args: physics_run's parsed command line.
        attention: the attention backend checked.
        device: the device.
        before_timing: called before the timed steps.
        say: logger of progress lines.

    Returns:
        Losses, gradient differences, step times and the verdict (``equal_within_bf16``).
    """
    cfg = compose([f"experiment={args.experiment}", f"attention={attention}", *args.model_override])
    torch.manual_seed(0)
    eager = instantiate(cfg.model).to(device)
    compiled = copy.deepcopy(eager)
    names = compile_encoder(compiled.encoder)
    loss_fn = instantiate(cfg.loss).to(device)
    # default: about one training batch (token budget, at most a mu = 200 pixel event)
    hits = args.check_hits or min(60_000, int(cfg.data.max_tokens))
    heads = {
        "num_params": int(cfg.data.get("num_params") or 0),  # the head's targets
        "num_classes": int(cfg.data.get("num_classes") or 0),
    }
    sizes = [hits // args.check_events] * args.check_events  # packed like a training batch
    batch = synthetic_batch(
        sizes, num_features=int(cfg.data.num_features), seed=0, device=device, **heads
    )
    res = {"attention": attention, "hits": hits, "events": len(sizes), "compiled": names}

    def loss_and_grads(model):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch)
        total, _ = loss_fn(out, batch)
        total.backward()
        grads = {
            k: p.grad.detach().float().clone()
            for k, p in model.named_parameters()
            if p.grad is not None
        }
        return float(total.detach()), grads

    t = time.perf_counter()
    le, ge = loss_and_grads(eager)
    sync(device)
    res["eager_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lc, gc = loss_and_grads(compiled)
    sync(device)
    res["compile_first_s"] = time.perf_counter() - t  # includes compilation
    if set(ge) != set(gc):
        raise RuntimeError(f"gradients of different parameters: {set(ge) ^ set(gc)}")
    rel = {k: float((gc[k] - ge[k]).norm() / ge[k].norm().clamp_min(1e-30)) for k in ge}
    cos = {
        k: float(torch.nn.functional.cosine_similarity(gc[k].flatten(), ge[k].flatten(), 0))
        for k in ge
    }
    worst = max(rel, key=rel.get)
    res.update(
        loss_eager=le,
        loss_compiled=lc,
        loss_rel_diff=abs(lc - le) / max(abs(le), 1e-30),
        grad_max_rel_diff=rel[worst],
        grad_worst_param=worst,
        grad_min_cosine=min(cos.values()),
        n_params_with_grad=len(ge),
    )
    res["equal_within_bf16"] = bool(
        res["loss_rel_diff"] <= args.loss_rtol
        and res["grad_max_rel_diff"] <= args.grad_rtol
        and res["grad_min_cosine"] >= 0.99
    )
    res["tolerances"] = {"loss_rel": args.loss_rtol, "grad_rel_l2": args.grad_rtol, "cosine": 0.99}
    say(f"compile check {attention}: equal_within_bf16={res['equal_within_bf16']}")
    if before_timing is not None:
        before_timing()
    for name, model in (("eager", eager), ("compiled", compiled)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for _ in range(args.check_warmup):
            _train_step(model, loss_fn, batch, opt, device)
        sync(device)
        t = time.perf_counter()
        for _ in range(args.check_steps):
            _train_step(model, loss_fn, batch, opt, device)
        sync(device)
        res[f"{name}_step_s"] = (time.perf_counter() - t) / args.check_steps
    res["speedup"] = res["eager_step_s"] / res["compiled_step_s"]
    res["device"] = device_name(device)
    res["torch"] = torch.__version__
    return res
