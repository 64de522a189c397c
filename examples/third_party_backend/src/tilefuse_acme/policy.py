"""A vendor scheduling policy: veto horizontal fusion, prefer bigger blocks."""

from __future__ import annotations

from tilefuse import plugin


class AcmePolicy:
    name = "acme-policy"
    api_version = plugin.API_VERSION

    def uuid(self) -> str:
        return "acme-policy-1"  # enters cache keys: change it when decisions change

    def rank_fusions(
        self, candidates: list[plugin.FusionCandidate]
    ) -> list[plugin.FusionCandidate]:
        return [c for c in candidates if c.kind != "horizontal"]

    def tiling(self, spec: plugin.KernelSpec, device: str) -> dict | None:
        if spec.kind is plugin.GroupKind.POINTWISE:
            return {"XBLOCK": 4096, "num_warps": 8}
        return None


POLICY = AcmePolicy()
