"""DuckDB persistence: the only module that writes SQL.

Its surface is narrow on purpose (plan, record answers, publish a partition, read
summaries), so that a second backend can sit behind it.
"""

from mobile_status_dagster.core.store.connection import Connect, connect_with_retry, file_connect
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable

__all__ = ["Connect", "Partition", "SourceTable", "Tables", "connect_with_retry", "file_connect"]
