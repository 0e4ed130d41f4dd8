"""The feature cache: the self-describing, memmapped store between extraction and evaluation."""

from avbench.cache.format import SCHEMA_VERSION, Manifest
from avbench.cache.reader import CacheSplit, DeviceSplit, FeatureCache
from avbench.cache.writer import CacheWriter

__all__ = ["Manifest", "SCHEMA_VERSION", "CacheSplit", "DeviceSplit", "FeatureCache", "CacheWriter"]
