"""Per-agent stats from ClickHouse: the data layer behind the stats API (no web framework)."""

from registry_api.stats.prices import PriceTable, load_prices
from registry_api.stats.store import StatsStore

__all__ = ["PriceTable", "StatsStore", "load_prices"]
