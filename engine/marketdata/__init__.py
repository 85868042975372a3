"""Market data: providers that yield bars, and the validator that decides which bars count.

    provider.stream()  ->  Bar | BadInput  ->  BarValidator.validate()  ->  events to append
                                               (BarReceived / DataGap / DataRejected)

Importing this package has no side effects; alpaca-py and pyarrow are imported only by the
providers that need them, when they are used.
"""

from .alpaca_history import AlpacaHistory, AlpacaHistoryProvider
from .alpaca_live import AlpacaLiveProvider, LiveStats
from .assets import read_assets_csv, sample_assets_path, sample_bars_path
from .csv_io import CsvBarProvider, write_bars_csv
from .parquet_io import ParquetBarProvider, write_bars_parquet
from .recorded import RecordedLogProvider
from .types import (
    INPUT_REJECT_CODES,
    BadInput,
    BarProvider,
    DataFileError,
    MarketItem,
    ProviderError,
)
from .validator import VALIDATOR_REJECT_CODES, BarValidator

__all__ = [
    "INPUT_REJECT_CODES",
    "VALIDATOR_REJECT_CODES",
    "AlpacaHistory",
    "AlpacaHistoryProvider",
    "AlpacaLiveProvider",
    "BadInput",
    "BarProvider",
    "BarValidator",
    "CsvBarProvider",
    "DataFileError",
    "LiveStats",
    "MarketItem",
    "ParquetBarProvider",
    "ProviderError",
    "RecordedLogProvider",
    "read_assets_csv",
    "sample_assets_path",
    "sample_bars_path",
    "write_bars_csv",
    "write_bars_parquet",
]
