"""Many entities on daily dates: the births-by-state source and per-entity feature rows."""

from pulse_assets.entities.features import entity_day_features
from pulse_assets.entities.source import BirthsByStateDaily, EntitySlice

__all__ = ["BirthsByStateDaily", "EntitySlice", "entity_day_features"]
