"""A scheduling policy as core hands it on: every answer checked before anything acts on it.

``CheckedPolicy`` wraps the plugin object that ``TILEFUSE_POLICY`` names
(``backend_selection.active_policy`` builds it); the scheduler and every backend see
only the wrapper, so no backend needs its own checks:

``uuid()``
    Asked once, when the wrapper is built; it must return a non-empty ``str``
    (``policy_uuid``). A policy that fails is refused as a whole.
``rank_fusions(candidates)``
    Must return a list holding some of the very candidates it was given, each at
    most once (``check_ranking``).
``tiling(spec, device)``
    Receives the ``plugin.KernelSpec`` about to be rendered; must return ``None`` or a
    dict accepted by ``check_tiling``.

A ``rank_fusions`` or ``tiling`` answer that fails its check (or raises) is refused:
one warning names the policy and what was wrong, and the scheduler's own order or the
backend's own tiling is used instead. Under ``TILEFUSE_STRICT`` it raises
``PluginError``.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from typing import Any

from . import config
from .discovery import short_repr
from .errors import PluginError
from .kernel_spec import GroupKind

log = logging.getLogger("tilefuse.plugins")

# Tiling keys a policy may set, and what each means to a backend:
#   XBLOCK      elements of the x (row) dimension per program: a power of two
#   RBLOCK      elements of the r (reduction / inner tile) dimension per step: a power of two
#   num_warps   warps per program: a power of two up to MAX_WARPS
#   persistent  reductions only: True reduces a whole row in one pass (RBLOCK must then
#               cover the row), False loops over the row RBLOCK elements at a time
BLOCK_KEYS = ("XBLOCK", "RBLOCK")
TILING_KEYS = (*BLOCK_KEYS, "num_warps", "persistent")
MAX_BLOCK_NUMEL = 2**20  # XBLOCK * RBLOCK: Triton's largest tensor, a sane bound for any backend
MAX_WARPS = 32  # 1024 threads, the most a CUDA or ROCm block holds


class InvalidAnswer(Exception):
    """A policy's answer broke its contract; ``str(exc)`` says how."""


def policy_uuid(policy: Any) -> str:
    """``policy.uuid()`` when it is a non-empty str; raises ``InvalidAnswer`` otherwise."""
    try:
        value = policy.uuid()
    except Exception as exc:
        raise InvalidAnswer(f"uuid() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, str) or not value.strip():
        raise InvalidAnswer(f"uuid() returned {short_repr(value)}; it must be a non-empty str")
    return value


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _as_int(value: Any) -> int | None:
    """``value`` as an int when the extent is concrete (symbolic sizes give ``None``)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def check_tiling(answer: Any, group: Any) -> dict[str, Any] | None:
    """The validated copy of a ``tiling(spec, device)`` answer; ``None`` keeps the backend's.

    ``group`` is the ``KernelSpec`` that was asked about (its ``kind`` and ``rnumel``
    are read). Raises ``InvalidAnswer`` when the answer is not a dict of
    ``TILING_KEYS``; when a block size or ``num_warps`` is not an int power of two
    within bounds; when ``RBLOCK`` is given to a one-dimensional pointwise group (it
    must be 1 there) or ``persistent`` to a group that is not a reduction; or when a
    reduction would run single-pass with an ``RBLOCK`` that does not cover its row
    (set ``"persistent": False`` to ask for a looped reduction instead).
    """
    if answer is None:
        return None
    if not isinstance(answer, Mapping):
        raise InvalidAnswer(f"tiling() returned {short_repr(answer)}; expected a dict or None")
    unknown = [k for k in answer if k not in TILING_KEYS]
    if unknown:
        names = ", ".join(short_repr(k) for k in unknown)
        raise InvalidAnswer(f"unknown tiling key {names}; known keys: {', '.join(TILING_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in answer.items():
        if key == "persistent":
            if not isinstance(value, bool):
                raise InvalidAnswer(f"persistent={short_repr(value)} must be True or False")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InvalidAnswer(f"{key}={short_repr(value)} must be an int")
        value = int(value)
        limit = MAX_WARPS if key == "num_warps" else MAX_BLOCK_NUMEL
        if not _is_pow2(value) or value > limit:
            raise InvalidAnswer(f"{key}={value} must be a power of two from 1 to {limit}")
        out[key] = value
    numel = out.get("XBLOCK", 1) * out.get("RBLOCK", 1)
    if numel > MAX_BLOCK_NUMEL:
        raise InvalidAnswer(f"XBLOCK * RBLOCK = {numel} exceeds {MAX_BLOCK_NUMEL}")
    _check_against_group(out, group)
    return out or None


def _check_against_group(tiling: dict[str, Any], group: Any) -> None:
    kind = GroupKind(group.kind)
    reduction = kind is GroupKind.REDUCTION
    tiled = kind is GroupKind.POINTWISE_2D
    if not reduction:
        if "persistent" in tiling:
            raise InvalidAnswer("persistent applies to reductions only; this group has none")
        if not tiled and tiling.get("RBLOCK", 1) != 1:
            raise InvalidAnswer(
                f"RBLOCK={tiling['RBLOCK']} on a one-dimensional pointwise group; it must be 1"
            )
        return
    persistent = tiling.get("persistent")
    if persistent is False or ("RBLOCK" not in tiling and persistent is None):
        return  # a looped reduction, or the backend's own RBLOCK for its own choice
    rnumel = _as_int(getattr(group, "rnumel", None))
    rblock = tiling.get("RBLOCK")
    if rblock is None:
        raise InvalidAnswer(
            "persistent=True needs an RBLOCK that covers the reduced row"
            + (f" (at least {_next_pow2(rnumel)})" if rnumel is not None else "")
        )
    if rnumel is None:
        raise InvalidAnswer(
            f"RBLOCK={rblock} for a reduction whose row length is symbolic: it may not cover "
            "the row; add 'persistent': False for a looped reduction"
        )
    if rblock < rnumel:
        raise InvalidAnswer(
            f"RBLOCK={rblock} does not cover the row of {rnumel} elements that a single-pass "
            f"reduction reduces at once; use RBLOCK >= {_next_pow2(rnumel)}, or add "
            "'persistent': False for a looped reduction"
        )


def check_ranking(answer: Any, candidates: list[Any]) -> list[Any]:
    """The validated ``rank_fusions(candidates)`` answer: a list of given candidates.

    Raises ``InvalidAnswer`` for something that is not a list or tuple, for an element
    that is not one of ``candidates`` (by identity), or for a candidate listed twice.
    """
    if not isinstance(answer, (list, tuple)):
        raise InvalidAnswer(f"rank_fusions() returned {short_repr(answer)}; expected a list")
    given = {id(c) for c in candidates}
    seen: set[int] = set()
    for item in answer:
        if id(item) not in given:
            raise InvalidAnswer(
                f"rank_fusions() returned {short_repr(item)}, which is not one of the "
                "candidates it was given"
            )
        if id(item) in seen:
            raise InvalidAnswer(f"rank_fusions() returned {short_repr(item)} twice")
        seen.add(id(item))
    return list(answer)


class CheckedPolicy:
    """A ``plugin.SchedulingPolicy`` whose answers are validated (see the module docstring).

    ``policy`` is the plugin object, ``dist`` its distribution (for messages); build it
    with ``CheckedPolicy.wrap``, which asks ``uuid()`` once.
    """

    def __init__(self, policy: Any, uuid: str, dist: str = "") -> None:
        self.wrapped = policy
        self.name = str(policy.name)
        self.api_version = policy.api_version
        self.dist = dist
        self._uuid = uuid
        self._warned: set[str] = set()

    @classmethod
    def wrap(cls, policy: Any, dist: str = "") -> CheckedPolicy:
        """Raises ``InvalidAnswer`` when ``policy.uuid()`` breaks its contract."""
        return cls(policy, policy_uuid(policy), dist)

    def uuid(self) -> str:
        return self._uuid

    def rank_fusions(self, candidates: list[Any]) -> list[Any]:
        """The policy's ranking when valid, else ``candidates`` unchanged (nothing vetoed)."""
        candidates = list(candidates)
        try:
            return check_ranking(self.wrapped.rank_fusions(list(candidates)), candidates)
        except InvalidAnswer as exc:
            self._refuse("rank_fusions", str(exc), "keeping the scheduler's own order")
        except Exception as exc:
            what = f"rank_fusions() raised {type(exc).__name__}: {exc}"
            self._refuse("rank_fusions", what, "keeping the scheduler's own order")
        return candidates

    def tiling(self, spec: Any, device: str) -> dict[str, Any] | None:
        """The policy's tiling for ``spec`` (a ``KernelSpec``) when valid, else ``None``
        (the backend's own choice)."""
        try:
            return check_tiling(self.wrapped.tiling(spec, device), spec)
        except InvalidAnswer as exc:
            self._refuse("tiling", str(exc), "using the backend's own tiling", spec)
        except Exception as exc:
            what = f"tiling() raised {type(exc).__name__}: {exc}"
            self._refuse("tiling", what, "using the backend's own tiling", spec)
        return None

    def _refuse(self, hook: str, what: str, instead: str, group: Any = None) -> None:
        where = ""
        if group is not None and callable(getattr(group, "describe", None)):
            try:
                where = f" for {group.describe()}"
            except Exception:
                where = ""
        origin = f" from {self.dist}" if self.dist else ""
        message = (
            f"scheduling policy {self.name!r}{origin}: refused its {hook}() answer{where}: {what}"
        )
        if config.strict():
            raise PluginError(message + ". Fix the policy or unset TILEFUSE_POLICY.")
        key = f"{hook}: {what}"
        if key not in self._warned:
            self._warned.add(key)
            log.warning("tilefuse: %s; %s", message, instead)

    def __repr__(self) -> str:
        return f"CheckedPolicy({self.name!r}, uuid={self._uuid!r})"
