"""Scheduler: dependencies, dead-code elimination, fusion, tiling, memory planning."""

from .fusion import ExternStep, Refusal, TemplateStep
from .group import FusedGroup
from .schedule import Schedule, schedule_graph

__all__ = ["TemplateStep", "ExternStep", "FusedGroup", "Refusal", "Schedule", "schedule_graph"]
