"""GEMM tile configurations: the search space per device and the heuristic first pick.

A ``GemmConfig`` is one point of the space (tile sizes, pipeline depth, warps,
program grouping). ``search_space`` lists the points worth trying for one
problem, best guess first; ``DeviceTraits`` carries the few device facts the
choice depends on, so the space can be computed (and tested) without a GPU.
Nothing here imports triton; torch is imported only to query a CUDA device.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

# Shared memory per block with opt-in, in bytes, by compute capability.
_SMEM_BY_CAPABILITY = {
    (7, 0): 98304,
    (7, 5): 65536,
    (8, 0): 166912,
    (8, 6): 101376,
    (8, 7): 166912,
    (8, 9): 101376,
    (9, 0): 232448,
    (10, 0): 232448,
    (12, 0): 101376,
}


@dataclass(frozen=True)
class GemmConfig:
    """One tiling of the GEMM template.

    ``block_m``/``block_n``/``block_k`` are the tile sizes (powers of two, >= 16,
    as ``tl.dot`` requires); ``num_stages`` the software-pipelining depth;
    ``num_warps`` the warps per program; ``group_m`` how many row-tiles share a
    column sweep (grouped ordering, for L2 reuse). ``tf32`` lets float32 inputs
    use TF32 tensor cores (``tl.dot(input_precision="tf32")``).
    """

    block_m: int
    block_n: int
    block_k: int
    num_stages: int
    num_warps: int
    group_m: int = 8
    tf32: bool = False

    def __post_init__(self) -> None:
        for field_name in ("block_m", "block_n", "block_k"):
            size = getattr(self, field_name)
            if size < 16 or size & (size - 1):
                raise ValueError(f"{field_name}={size}: tiles must be powers of two >= 16")
        if self.num_stages < 1 or self.num_warps < 1 or self.group_m < 1:
            raise ValueError(f"{self}: num_stages, num_warps and group_m must be >= 1")

    def tag(self) -> str:
        """The config part of a choice name, e.g. ``128x256x64_s4_w8_g8``."""
        tag = (
            f"{self.block_m}x{self.block_n}x{self.block_k}"
            f"_s{self.num_stages}_w{self.num_warps}_g{self.group_m}"
        )
        return tag + ("_tf32" if self.tf32 else "")

    def smem_bytes(self, element_size: int) -> int:
        """Shared memory the pipelined operand tiles need (an estimate Triton also makes)."""
        per_stage = (self.block_m * self.block_k + self.block_k * self.block_n) * element_size
        return self.num_stages * per_stage


@dataclass(frozen=True)
class DeviceTraits:
    """The device facts the search space depends on.

    ``kind`` is ``"cuda"`` or ``"interpreter"`` (Triton's CPU interpreter);
    ``capability`` the CUDA compute capability; ``sm_count`` the number of SMs;
    ``smem_bytes`` the shared memory a block may use.
    """

    kind: str
    capability: tuple[int, int] = (0, 0)
    sm_count: int = 1
    smem_bytes: int = 0

    @classmethod
    def interpreter(cls) -> DeviceTraits:
        return cls("interpreter", sm_count=1, smem_bytes=1 << 30)

    @classmethod
    def hopper(cls) -> DeviceTraits:
        """An H100 SXM: used when describing a CUDA device no GPU here can show."""
        return cls("cuda", (9, 0), 132, _SMEM_BY_CAPABILITY[(9, 0)])


def device_traits(device: str) -> DeviceTraits:
    """Traits of a torch device string (``"cuda:0"``, ``"cpu"``).

    ``cpu`` means Triton's interpreter. A CUDA device is queried through torch;
    when no CUDA device is visible (building choices on a CPU machine) the
    traits of an H100 are assumed.
    """
    if not device.startswith("cuda"):
        return DeviceTraits.interpreter()
    try:
        import torch

        if not torch.cuda.is_available():
            return DeviceTraits.hopper()
        props = torch.cuda.get_device_properties(device)
    except Exception:  # a broken driver must not stop choice listing
        return DeviceTraits.hopper()
    capability = (int(props.major), int(props.minor))
    smem = int(getattr(props, "shared_memory_per_block_optin", 0) or 0)
    smem = smem or _SMEM_BY_CAPABILITY.get(capability, 101376)
    return DeviceTraits("cuda", capability, int(props.multi_processor_count), smem)


# (block_m, block_n, block_k, num_stages, num_warps) for 16-bit inputs, roughly best-first
# for large problems. float32 inputs use half the block_k (the same bytes per stage).
_HOPPER = (
    (128, 256, 64, 4, 8),
    (128, 256, 64, 3, 8),
    (256, 128, 64, 3, 8),
    (128, 128, 64, 4, 8),
    (128, 128, 64, 4, 4),
    (128, 128, 128, 3, 8),
    (64, 256, 64, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 128, 4, 4),
    (64, 64, 64, 4, 4),
    (128, 32, 64, 4, 4),
    (32, 64, 64, 5, 2),
    (32, 32, 128, 4, 4),
    (16, 64, 128, 4, 4),
    (16, 32, 64, 3, 2),
)
_AMPERE = (
    (128, 256, 64, 3, 8),
    (256, 128, 64, 3, 8),
    (128, 128, 64, 4, 4),
    (128, 128, 32, 4, 4),
    (64, 256, 32, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
    (128, 32, 32, 4, 4),
    (32, 64, 64, 5, 2),
    (32, 32, 64, 4, 4),
    (16, 64, 128, 3, 4),
    (16, 32, 64, 3, 2),
)
_GENERIC = (
    (128, 128, 32, 3, 4),
    (128, 64, 32, 3, 4),
    (64, 128, 32, 3, 4),
    (64, 64, 32, 3, 4),
    (32, 64, 32, 3, 2),
    (32, 32, 32, 2, 4),
    (16, 32, 32, 2, 2),
)
# The interpreter runs each program as numpy calls: few, large programs are fastest.
_INTERPRETER = (
    (64, 64, 32, 1, 4),
    (32, 32, 32, 1, 4),
    (16, 16, 16, 1, 1),
)

# How many configs ``default`` autotuning tries; ``max`` tries all of them.
DEFAULT_SPACE_SIZE = 8
# ``max`` also tries other ``group_m`` values (the L2-friendly launch order) for this many
# configs: the pick and the next largest tiles, where the grid is large and the order
# matters. Today's H200 winners were all such tiles (bench runs of 2026-11-30); variants
# of every config doubled max mode's Triton builds and measurements for no winner.
GROUP_VARIANT_CONFIGS = 4
# ``max`` leaves out tiles smaller than the largest tile that still fills the device by more
# than this factor in area: on a large product they only re-read the operands (an H200 run of
# 2026-12-01, 4096x11008x4096 bf16: 64x64 and 128x32 tiles took 2-3x the 128x256 winner's
# time, 32x32 5x), and each costs a build and a measurement.
MAX_TILE_AREA_RATIO = 4


def _table(traits: DeviceTraits) -> tuple[tuple[int, int, int, int, int], ...]:
    if traits.kind == "interpreter":
        return _INTERPRETER
    if traits.capability >= (9, 0):
        return _HOPPER
    if traits.capability >= (8, 0):
        return _AMPERE
    return _GENERIC


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def fit_to_problem(config: GemmConfig, m: int, n: int, k: int) -> GemmConfig:
    """Shrink tiles that exceed the problem (M=17 needs no 128-row tile), and the warps with them.

    Tiles never go below 16 (``tl.dot``'s minimum); warps are capped at one per
    256 output elements of the tile.
    """
    bm = min(config.block_m, max(16, _pow2_at_least(m)))
    bn = min(config.block_n, max(16, _pow2_at_least(n)))
    bk = min(config.block_k, max(16, _pow2_at_least(k)))
    warps = min(config.num_warps, max(1, (bm * bn) // 256))
    return replace(config, block_m=bm, block_n=bn, block_k=bk, num_warps=warps)


def _tiles(config: GemmConfig, m: int, n: int, batch: int) -> int:
    return batch * (-(-m // config.block_m)) * (-(-n // config.block_n))


def search_space(
    m: int,
    n: int,
    k: int,
    batch: int,
    dtype: str,
    traits: DeviceTraits,
    *,
    tf32: bool = False,
    mode: str = "default",
) -> list[GemmConfig]:
    """The configs worth trying for an ``[batch x] m x k @ k x n`` product of ``dtype`` inputs.

    The first entry is the heuristic pick. ``mode`` is the autotune mode:
    ``off`` returns only the pick, ``default`` up to ``DEFAULT_SPACE_SIZE``
    configs, ``max`` every config of the device's table plus ``group_m``
    variants of the first ``GROUP_VARIANT_CONFIGS``, less the tiles far too small for
    the problem (``MAX_TILE_AREA_RATIO``). Configs needing more shared
    memory than the device has are left out; tiles are shrunk to the problem and
    duplicates removed.
    """
    element_size = 4 if dtype == "float32" else 2
    use_tf32 = tf32 and dtype == "float32"
    fitted: list[GemmConfig] = []
    for bm, bn, bk, stages, warps in _table(traits):
        if element_size == 4:
            bk = max(16, bk // 2)
        config = GemmConfig(bm, bn, bk, stages, warps, 8, use_tf32)
        config = fit_to_problem(config, m, n, k)
        if traits.kind == "cuda" and config.smem_bytes(element_size) > traits.smem_bytes:
            continue
        if config not in fitted:
            fitted.append(config)
    pick = _heuristic(fitted, m, n, batch, traits)
    ordered = [pick] + [c for c in fitted if c != pick]
    if mode == "off":
        return ordered[:1]
    if mode == "max":
        extra = [replace(c, group_m=g) for c in ordered[:GROUP_VARIANT_CONFIGS] for g in (4, 16)]
        return _unique(_without_small_tiles(ordered, m, n, batch, traits) + extra)
    return ordered[:DEFAULT_SPACE_SIZE]


def _heuristic(
    fitted: list[GemmConfig], m: int, n: int, batch: int, traits: DeviceTraits
) -> GemmConfig:
    """The first config (in table order: largest tiles first) that fills the device.

    "Fills" means at least one program per SM; when no config does (a small
    problem), the config giving the most programs wins, ties to the earlier one.
    """
    if traits.kind == "interpreter":
        return fitted[0]
    most = max(_tiles(c, m, n, batch) for c in fitted)
    target = min(traits.sm_count, most)
    for config in fitted:
        if _tiles(config, m, n, batch) >= target:
            return config
    return fitted[0]  # unreachable: the config giving ``most`` qualifies


def _without_small_tiles(
    configs: list[GemmConfig], m: int, n: int, batch: int, traits: DeviceTraits
) -> list[GemmConfig]:
    """``configs`` less the tiles more than ``MAX_TILE_AREA_RATIO`` times smaller in area than
    the largest tile that gives every SM a program (none when no tile does: a small
    problem keeps every tile). The first config, the heuristic pick, always stays."""
    filling = [c for c in configs if _tiles(c, m, n, batch) >= traits.sm_count]
    if traits.kind == "interpreter" or not filling:
        return configs
    floor = max(c.block_m * c.block_n for c in filling) / MAX_TILE_AREA_RATIO
    return configs[:1] + [c for c in configs[1:] if c.block_m * c.block_n >= floor]


def _unique(configs: Iterable[GemmConfig]) -> list[GemmConfig]:
    seen: list[GemmConfig] = []
    for config in configs:
        if config not in seen:
            seen.append(config)
    return seen
