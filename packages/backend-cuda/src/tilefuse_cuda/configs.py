"""Kernel configurations (tile, cluster, schedule) and the heuristic that orders them."""

from __future__ import annotations

from dataclasses import dataclass

from .problem import Dims

COOPERATIVE = "cooperative"
PINGPONG = "pingpong"
SCHEDULES = (COOPERATIVE, PINGPONG)


@dataclass(frozen=True)
class GemmConfig:
    """One CUTLASS 3 sm_90a kernel shape.

    ``tile`` is the CTA tile (M, N, K), ``cluster`` the thread-block cluster
    (M, N), ``schedule`` ``"cooperative"`` (two consumer warp groups share a
    tile; tile M must be a multiple of 128) or ``"pingpong"`` (each consumer
    warp group owns a tile, epilogue overlapped with the other's mainloop).
    ``swizzle`` is the persistent tile scheduler's ``max_swizzle_size``: how many
    tiles along the raster's minor side run together, for L2 reuse of operands.
    """

    schedule: str
    tile: tuple[int, int, int]
    cluster: tuple[int, int] = (1, 1)
    swizzle: int = 1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}; known: {SCHEDULES}")
        if self.schedule == COOPERATIVE and self.tile[0] % 128:
            raise ValueError(f"a cooperative tile needs M % 128 == 0, got {self.tile}")
        if self.swizzle not in (1, 2, 4, 8):
            raise ValueError(f"swizzle must be 1, 2, 4 or 8, got {self.swizzle}")

    def tag(self) -> str:
        t, c = self.tile, self.cluster
        tag = f"{self.schedule[:4]}_{t[0]}x{t[1]}x{t[2]}_c{c[0]}x{c[1]}"
        return tag if self.swizzle == 1 else f"{tag}_sw{self.swizzle}"


# Configurations worth compiling for bf16/fp16 on Hopper (CUTLASS profiler's usual picks; the
# swizzled large tiles are for big square problems, where L2 reuse decides the last few %).
ALL_CONFIGS = (
    GemmConfig(COOPERATIVE, (128, 256, 64), (2, 1)),
    GemmConfig(COOPERATIVE, (128, 128, 64), (1, 1)),
    GemmConfig(COOPERATIVE, (256, 128, 64), (2, 1)),
    GemmConfig(COOPERATIVE, (256, 128, 64), (2, 1), swizzle=8),
    GemmConfig(COOPERATIVE, (128, 256, 64), (2, 1), swizzle=8),
    GemmConfig(COOPERATIVE, (128, 256, 64), (1, 1)),
    GemmConfig(PINGPONG, (128, 128, 64), (1, 1)),
    GemmConfig(PINGPONG, (64, 128, 64), (1, 1)),
    GemmConfig(PINGPONG, (64, 256, 64), (1, 1)),
)


def heuristic(dims: Dims) -> GemmConfig:
    """The configuration to try first for a problem of these sizes."""
    m, n = dims.m, dims.n
    if m <= 64:
        return GemmConfig(PINGPONG, (64, 128, 64), (1, 1))
    tiles_256 = -(-m // 128) * -(-n // 256) * dims.batch
    if tiles_256 >= 132:  # enough 128x256 tiles to fill an H100's SMs
        return GemmConfig(COOPERATIVE, (128, 256, 64), (2, 1))
    return GemmConfig(COOPERATIVE, (128, 128, 64), (1, 1))


SM_COUNT = 132  # H100 SXM / H200: the ranking's wave model; only the order depends on it


def rank(dims: Dims) -> list[GemmConfig]:
    """Every fitting configuration for ``dims``, best expected first: the heuristic pick,
    then one of each (schedule, tile) by ``score``, then the remaining variants (other
    clusters and swizzles of a tile already listed) by ``score``; ties keep
    ``ALL_CONFIGS`` order.

    This order decides which configurations are built when a budget cuts the list, so a
    short list still spans the schedules and tiles instead of variants of one tile.
    """
    first = heuristic(dims)
    rest = [c for c in ALL_CONFIGS if c != first and _fits(c, dims)]
    rest.sort(key=lambda c: -score(c, dims))  # stable: ties stay in ALL_CONFIGS order
    seen = {(first.schedule, first.tile)}
    distinct: list[GemmConfig] = []
    variants: list[GemmConfig] = []
    for config in rest:
        shape = (config.schedule, config.tile)
        (variants if shape in seen else distinct).append(config)
        seen.add(shape)
    return [first, *distinct, *variants]


def score(config: GemmConfig, dims: Dims) -> float:
    """Expected relative throughput of ``config`` on ``dims`` (higher is better; a model,
    not a measurement): the fraction of computed tile area that is real output, times
    the fraction of the last wave of persistent CTAs that is busy, times the square
    root of the tile's arithmetic intensity (bigger tiles reuse operands more).
    """
    tm, tn, _ = config.tile
    tiles_m, tiles_n = -(-dims.m // tm), -(-dims.n // tn)
    tiles = tiles_m * tiles_n * dims.batch
    useful = (dims.m * dims.n * dims.batch) / (tiles * tm * tn)
    waves = tiles / SM_COUNT
    wave_fill = waves / -(-tiles // SM_COUNT)
    intensity = (tm * tn) / (tm + tn)
    return useful * wave_fill * intensity**0.5


def configs_for(dims: Dims, limit: int | None = None) -> list[GemmConfig]:
    """The first ``limit`` of ``rank(dims)`` (all of them when ``limit`` is None)."""
    ordered = rank(dims)
    return ordered[:limit] if limit else ordered


def _fits(config: GemmConfig, dims: Dims) -> bool:
    """Tiles far larger than the problem only waste a compile."""
    tm, tn, _ = config.tile
    cm, _ = config.cluster
    if tm * cm > 2 * max(dims.m, 64) or tn > 2 * max(dims.n, 128):
        return False
    return True
