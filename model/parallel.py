"""One video across several processes (GPUs): sequence parallelism and guidance parallelism.

Ranks form a (cfg x sequence) mesh, rank = cfg_rank * seq_size + seq_rank:

- **Guidance parallel** (cfg_size 2): the batch of a guided step (conditional, unconditional) is
  split across the cfg groups, each half runs on its own ranks, one all-gather rebuilds the batch.
  Any batch divisible by cfg_size splits; otherwise (guidance 1) every cfg group computes it all.
- **Sequence parallel** (seq_size P): after the patch embed the N tokens are padded to P*n and
  rank r keeps tokens [r*n, (r+1)*n), with the RoPE rotations of their GLOBAL positions. Every
  per-token layer (adaLN, MLP, cross-attention: queries sharded, the text replicated) runs on the
  shard without communication. Self-attention is Ulysses (DeepSpeed-Ulysses, Jacobs et al. 2023):
  one all-to-all turns (B, heads, n, d) x 3 into (B, heads/P, P*n, d) x 3, the padding rows are cut
  off (so keys are exactly the N real ones), attention runs over the whole sequence on heads/P
  heads, and a second all-to-all brings the output back to the token shard. Where heads % P != 0
  (e.g. 12 heads on 8 GPUs) each rank instead all-gathers K and V and attends with its own queries
  over all heads (more traffic, same result). The final layer runs on the shard; one all-gather
  rebuilds the tokens before unpatchify, so every rank holds the same velocity and the scheduler
  steps stay bit-identical across ranks.

Collectives used: all_to_all_single, all_gather_single, broadcast. All exist on NCCL and, in torch
2.13, on gloo (the CPU tests run on gloo). The VAE decode is split by spatial tiles in
`model/parallel_pipeline.py`, with `parallel_generate`, the whole prompt -> frames call.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model import dit as dit_module
from model.dit import VideoDiT

_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass
class Mesh:
    """This process's place in a (cfg x sequence) grid of ranks; groups are torch process groups."""

    ranks: list[int]  # global ranks of the mesh, ordered cfg-major
    cfg_size: int
    seq_size: int
    cfg_rank: int
    seq_rank: int
    group: dist.ProcessGroup  # all ranks of the mesh
    cfg_group: dist.ProcessGroup | None  # same seq_rank, every cfg_rank (None when cfg_size == 1)
    seq_group: dist.ProcessGroup | None  # same cfg_rank, every seq_rank (None when seq_size == 1)

    @property
    def rank(self) -> int:
        return self.cfg_rank * self.seq_size + self.seq_rank

    @property
    def size(self) -> int:
        return self.cfg_size * self.seq_size


def make_mesh(cfg_size: int = 1, ranks: list[int] | None = None) -> Mesh | None:
    """Split `ranks` (default: the whole world) into cfg_size groups of sequence ranks.

    Every process of the world must call this (torch's new_group is collective); processes outside
    `ranks` get None.
    """
    ranks = list(range(dist.get_world_size())) if ranks is None else list(ranks)
    if cfg_size < 1 or len(ranks) % cfg_size:
        raise ValueError(f"{len(ranks)} ranks cannot be split into {cfg_size} guidance groups")
    seq_size = len(ranks) // cfg_size
    group = dist.new_group(ranks) if len(ranks) < dist.get_world_size() else dist.group.WORLD
    mine = dist.get_rank()
    seq_group = cfg_group = None
    for c in range(cfg_size):  # every process creates every group, in the same order
        members = ranks[c * seq_size:(c + 1) * seq_size]
        g = dist.new_group(members) if seq_size > 1 else None
        if mine in members:
            seq_group = g
    for s in range(seq_size):
        members = [ranks[c * seq_size + s] for c in range(cfg_size)]
        g = dist.new_group(members) if cfg_size > 1 else None
        if mine in members:
            cfg_group = g
    if mine not in ranks:
        return None
    index = ranks.index(mine)
    return Mesh(ranks, cfg_size, seq_size, index // seq_size, index % seq_size, group, cfg_group, seq_group)


#################################################################################
#                                Communication                                  #
#################################################################################


def all_gather_stack(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """x (...) on each of P ranks -> (P, ...) in group-rank order."""
    P = dist.get_world_size(group)
    out = torch.empty((P * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)  # gloo wants dim 0 joined
    _all_gather_single(out, x.contiguous(), group=group)
    return out.view(P, *x.shape)


def all_to_all(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """x (P, ...): slice j goes to rank j; returns (P, ...) whose slice i came from rank i."""
    x = x.contiguous()
    out = torch.empty_like(x)  # after .contiguous(): empty_like keeps a permuted input's strides
    dist.all_to_all_single(out, x, group=group)
    return out


#################################################################################
#                          Sequence-parallel attention                          #
#################################################################################


def ulysses_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    *, group: dist.ProcessGroup, num_tokens: int,
) -> torch.Tensor:
    """Self-attention over the whole sequence from token shards; q/k/v (B, heads, n, d) -> (B, heads, n, d).

    `num_tokens` N is the real sequence length (the shards hold P*n >= N rows, padding at the end).
    """
    P = dist.get_world_size(group)
    B, heads, n, d = q.shape
    if heads % P:
        return _gathered_kv_attention(q, k, v, mask, group=group, num_tokens=num_tokens)
    # 1. tokens -> heads: (3, B, P, heads/P, n, d) with the head chunk first, one all-to-all.
    qkv = torch.stack([q, k, v]).view(3, B, P, heads // P, n, d).permute(2, 0, 1, 3, 4, 5)  # (P, 3, B, h/P, n, d)
    qkv = all_to_all(qkv, group)  # slice i: rank i's tokens of my heads
    qkv = qkv.permute(1, 2, 3, 0, 4, 5).reshape(3, B, heads // P, P * n, d)[:, :, :, :num_tokens]
    # 2. full attention on heads/P heads, through the one swappable kernel.
    out = dit_module.attention(qkv[0], qkv[1], qkv[2], mask)  # (B, h/P, N, d)
    out = F.pad(out, (0, 0, 0, P * n - num_tokens))  # (B, h/P, P*n, d)
    # 3. heads -> tokens.
    out = all_to_all(out.view(B, heads // P, P, n, d).permute(2, 0, 1, 3, 4), group)  # (P, B, h/P, n, d)
    return out.permute(1, 0, 2, 3, 4).reshape(B, heads, n, d)


def _gathered_kv_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    *, group: dist.ProcessGroup, num_tokens: int,
) -> torch.Tensor:
    """Heads not divisible by the ranks: all-gather K and V, attend with the local queries."""
    P = dist.get_world_size(group)
    B, heads, n, d = k.shape
    kv = all_gather_stack(torch.stack([k, v]), group)  # (P, 2, B, heads, n, d)
    kv = kv.permute(1, 2, 3, 0, 4, 5).reshape(2, B, heads, P * n, d)[:, :, :, :num_tokens]
    return dit_module.attention(q, kv[0], kv[1], mask)  # (B, heads, n, d)


#################################################################################
#                               The parallel model                              #
#################################################################################


class ParallelVideoDiT(nn.Module):
    """A VideoDiT run by every rank of a mesh; same call and result as `VideoDiT.forward`.

    It reuses the wrapped model's submodules (each rank holds the full weights: replicated, no
    sharding of parameters) and replaces only the token layout and the self-attention kernel.
    """

    def __init__(self, dit: VideoDiT, mesh: Mesh):
        super().__init__()
        self.dit, self.mesh = dit, mesh

    @property
    def config(self):
        return self.dit.config

    def forward(
        self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, C = x.shape[0], self.mesh.cfg_size
        if C == 1 or B % C:
            return self._sequence_forward(x, timestep, context, context_mask)
        part = slice(self.mesh.cfg_rank * B // C, (self.mesh.cfg_rank + 1) * B // C)
        timestep = timestep if timestep.numel() == 1 else timestep[part]
        mask = None if context_mask is None else context_mask[part]
        out = self._sequence_forward(x[part], timestep, context[part], mask)  # (B/C, C_out, T, H, W)
        return all_gather_stack(out, self.mesh.cfg_group).flatten(0, 1)  # (B, C_out, T, H, W)

    def _sequence_forward(
        self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        dit, P, r = self.dit, self.mesh.seq_size, self.mesh.seq_rank
        B = x.shape[0]
        tokens, grid = dit.embed_tokens(x)  # (B, N, D)
        N = math.prod(grid)
        n = -(-N // P)  # tokens per rank; the last rank(s) carry P*n - N padding rows
        rope = dit.rope(grid, x.device)  # (N, ...) rotations, token-major
        rope = torch.cat([rope, rope[-1:].expand(P * n - N, *rope.shape[1:])])[r * n:(r + 1) * n]  # (n, ...)
        tokens = F.pad(tokens, (0, 0, 0, P * n - N))[:, r * n:(r + 1) * n].contiguous()  # (B, n, D)
        t, t_mod, context, mask = dit.embed_conditions(timestep, context, context_mask, B, tokens.dtype)
        attend = None if P == 1 else partial(ulysses_attention, group=self.mesh.seq_group, num_tokens=N)
        for block in dit.blocks:
            tokens = block(tokens, context, mask, t_mod, rope, attend=attend)  # (B, n, D)
        out = dit.final_layer(tokens, t)  # (B, n, pt*ph*pw*C_out)
        if P > 1:
            out = all_gather_stack(out, self.mesh.seq_group)  # (P, B, n, X)
            out = out.transpose(0, 1).flatten(1, 2)[:, :N]  # (B, N, X)
        return dit.unpatchify(out, grid)  # (B, C_out, T, H, W)


#################################################################################
#                                  Launching                                    #
#################################################################################


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_rank(rank: int, world_size: int, port: int, backend: str, timeout_s: float = 600.0) -> None:
    """Join the process group on 127.0.0.1:port (one host). NVLink multicast (NVLS) stays off."""
    import datetime

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    kwargs = {"device_id": torch.device("cuda", rank)} if backend == "nccl" else {}
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s), **kwargs)


def _rank_main(rank: int, world_size: int, port: int, backend: str, fn: Callable, args: tuple) -> None:
    init_rank(rank, world_size, port, backend)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable, world_size: int, *args, backend: str = "gloo", start_method: str = "spawn") -> None:
    """Run fn(rank, world_size, *args) in world_size fresh processes joined in one process group.

    A failing rank raises here (torch.multiprocessing.ProcessRaisedException) with its traceback.
    start_method "fork" (CPU tests: no re-import) only from a parent that ran torch with ONE
    intra-op thread (a forked OpenMP pool can hang); "spawn" otherwise and always for CUDA.
    """
    import torch.multiprocessing as mp

    mp.start_processes(_rank_main, args=(world_size, free_port(), backend, fn, args), nprocs=world_size,
                       join=True, start_method=start_method)
