"""Job: a brand's exports into a new lake's raw zone (`quanyu data import`).

Steps:
1. read the sales-lines export (CSV or Parquet) and the optional products, customers and stores
   exports; the column mapping says which column holds which field (lake/importer.py: FIELDS);
2. turn them into the contract's raw tables (lake/importer.py: sales_lines), collecting every
   problem once per table × column × rule;
3. when there is none, write the brand settings (time zone, currency), the dimension tables and
   one partition per local date of the sales into `<lake>/raw`.

The lake must have no raw tables yet: an import never mixes with data already there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field

from lake.contract import RAW_TABLES, conform
from lake.importer import Imported, ImportProblem, sales_lines
from lake.settings import SETTINGS_FILE, LakeSettings
from lake.store import Lake, LakeError


class ImportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sales: Path
    mapping: dict[str, str] = Field(default_factory=dict, description="canonical field → the export's column")
    channel: str = Field("online", pattern="^(online|offline)$")
    products: Path | None = None
    customers: Path | None = None
    stores: Path | None = None
    unit_price: float | None = Field(None, gt=0)
    timezone: str | None = None  # written to settings.yaml; default: the lake's (Asia/Shanghai)
    currency: str | None = None


@dataclass
class ImportResult:
    lake: str
    problems: list[ImportProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    days: int = 0
    first: str | None = None
    last: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


def read_export(path: Path) -> pd.DataFrame:
    """A CSV or Parquet export as a frame (every CSV column as text, so ids keep their leading
    zeros). Raises LakeError when it cannot be read."""
    if not path.is_file():
        raise LakeError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, sep=None, engine="python")
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise LakeError(f"{path}: cannot be read as {'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'} "
                        f"({str(exc).splitlines()[0][:200]})") from None
    return frame


def read_mapping(path: Path) -> dict[str, str]:
    """A column mapping from a small YAML file (field: column). Raises LakeError."""
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LakeError(f"{path}: not a readable YAML mapping ({str(exc).splitlines()[0]})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise LakeError(f"{path}: write one field: column pair a line, e.g. product_id: StockCode")
    return {str(k): v for k, v in mapping.items()}


def main(config: ImportConfig, lake: Lake) -> ImportResult:
    """Import the exports into `lake`. Raises LakeError when a file cannot be read or the lake
    already has raw data."""
    started = time.monotonic()
    result = ImportResult(lake=str(lake.root))
    if any(lake.files("raw", t) or lake.partitions("raw", t) for t in RAW_TABLES):
        raise LakeError(f"{lake.root}/raw already holds tables; import into a new --lake (an import never mixes "
                        "with data already there)")
    settings = LakeSettings(**{k: v for k, v in (("timezone", config.timezone), ("currency", config.currency)) if v})
    exports = {name: read_export(path) for name, path in (("products", config.products), ("customers", config.customers),
                                                            ("stores", config.stores)) if path is not None}
    imported: Imported = sales_lines(read_export(config.sales), config.mapping, source=config.sales.stem,
                                     channel=config.channel, timezone=settings.timezone, unit_price=config.unit_price,
                                     **exports)
    result.problems, result.notes = imported.problems, imported.notes
    if imported.problems:
        result.seconds = round(time.monotonic() - started, 1)
        return result
    lake.root.mkdir(parents=True, exist_ok=True)
    if config.timezone or config.currency:
        (lake.root / SETTINGS_FILE).write_text(yaml.safe_dump(settings.model_dump(exclude_defaults=True)))
    for name, frame in imported.tables.items():
        spec = RAW_TABLES[name]
        own = name == "members"  # the customers export's own columns stay with the members
        columns = [c for c in frame.columns if own or c in {x.name for x in spec.columns}]
        lake.write("raw", name, conform(frame[columns], spec, keep_extra=own))
        result.rows[name] = len(frame)
    spec = RAW_TABLES[imported.fact_table]
    lines = imported.lines
    for day, rows in lines.groupby("dt", sort=True):
        lake.write("raw", imported.fact_table, conform(rows.drop(columns=["dt"]), spec, timezone=settings.timezone), day)
    result.rows[imported.fact_table] = len(lines)
    days = sorted(lines["dt"].unique())
    result.days, result.first, result.last = len(days), str(days[0]), str(days[-1])
    result.seconds = round(time.monotonic() - started, 1)
    return result
