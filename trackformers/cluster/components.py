"""Connected components on the GPU (or CPU) in plain torch.

Min-label propagation with pointer jumping ("hook and compress"): every node starts with its
own index as label, takes the minimum label over its edges, then follows labels to their
labels until nothing changes. The result labels every node by the smallest node index of its
component, which is what makes DBSCAN cluster order reproducible (see ``gpu_dbscan``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def connected_components(
    src: Tensor, dst: Tensor, num_nodes: int, max_iter: int = 10_000
) -> Tensor:
    """(num_nodes,) int64 label = smallest node index in the node's component.

    Args:
        src: (E,) int64 edge sources (edges are used in both directions).
        dst: (E,) int64 edge targets.
        num_nodes: number of nodes.
        max_iter: bound on the label-propagation rounds.
    """
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(
            f"src and dst must be 1-d of one shape, got {tuple(src.shape)}, {tuple(dst.shape)}"
        )
    device = src.device
    label = torch.arange(num_nodes, device=device)  # (num_nodes,)
    if src.numel() == 0:
        return label
    a = torch.cat([src, dst])  # (2E,)
    b = torch.cat([dst, src])  # (2E,)
    for _ in range(max_iter):
        new = label.scatter_reduce(0, b, label[a], reduce="amin")  # hook: min over neighbours
        new = new[new[new]]  # compress: two pointer jumps (labels only ever decrease)
        if torch.equal(new, label):  # one sync per round; a fixed point is the min-index root
            return label
        label = new
    raise RuntimeError(f"connected_components did not converge in {max_iter} iterations")
