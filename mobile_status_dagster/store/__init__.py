"""DuckDB persistence: the only module that writes SQL."""

from mobile_status_dagster.store.connection import Connect, connect_with_retry, file_connect
from mobile_status_dagster.store.source import Partition, SourceTable

__all__ = ["Connect", "Partition", "SourceTable", "connect_with_retry", "file_connect"]
