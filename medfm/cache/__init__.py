"""Fingerprinted stores (feature and pixel caches): format, lifecycle, locks, verified chunks."""

from medfm.cache.export import export_h5
from medfm.cache.fingerprint import describe_difference, fingerprint
from medfm.cache.kinds import FEATURES, PIXELS, StoreKind
from medfm.cache.lifecycle import Finished, Writing, open_store
from medfm.cache.store import FORMAT, FORMAT_VERSION, FeatureCache, SplitLayout, StoreReader, ZarrCacheWriter

__all__ = ["FEATURES", "FORMAT", "FORMAT_VERSION", "FeatureCache", "Finished", "PIXELS", "SplitLayout", "StoreKind",
           "StoreReader", "Writing", "ZarrCacheWriter", "export_h5", "fingerprint", "describe_difference", "open_store"]
