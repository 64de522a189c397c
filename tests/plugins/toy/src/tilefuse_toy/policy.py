"""A toy vendor scheduling policy: vetoes horizontal fusion, ranks the rest by score."""

from __future__ import annotations

from tilefuse import plugin


class NoHorizontalPolicy:
    name = "toy-policy"
    api_version = plugin.API_VERSION

    def uuid(self) -> str:
        return "toy-policy-v1"

    def rank_fusions(
        self, candidates: list[plugin.FusionCandidate]
    ) -> list[plugin.FusionCandidate]:
        kept = [c for c in candidates if c.kind != "horizontal"]
        return sorted(kept, key=lambda c: -c.score)

    def tiling(self, spec: plugin.KernelSpec, device: str) -> dict | None:
        return None


POLICY = NoHorizontalPolicy()
