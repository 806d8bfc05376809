"""Write the made-up LP-flow scenario files in data/ that bundled strategies read ([lp] flows).

Run: python scripts/make_lp_scenarios.py. These are not market data: each is a hypothetical LP
decision, written down here so that a strategy's question is reproducible, and the output is
byte-identical on every run so data/SOURCES.md can pin it by sha256.
"""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SCHEMA = pa.schema([pa.field("ts", pa.timestamp("us", tz="UTC")), pa.field("amount", pa.float64())])

# name: (rows of (ts, amount in USD: + deposit, - withdrawal request), what it stands for)
SCENARIOS = {
    "lp_ftx_week_2022": (
        [(datetime(2022, 11, 9, 12, tzinfo=UTC), -300_000.0)],
        "One LP asks for 300 k USD on 2022-11-09 12:00 UTC, the day after FTX halted "
        "withdrawals (read by strategies/lent-collateral-squeeze.toml). Hypothetical.",
    ),
}


def main() -> None:
    for name, (rows, what) in SCENARIOS.items():
        table = pa.table(
            {"ts": [ts for ts, _ in rows], "amount": [amount for _, amount in rows]},
            schema=SCHEMA,
        )
        note = json.dumps({"what": what, "made_by": "scripts/make_lp_scenarios.py"})
        table = table.replace_schema_metadata({"provenance": note})
        path = REPO / "data" / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path.relative_to(REPO)}  {len(rows)} rows  {path.stat().st_size} bytes  {digest}")


if __name__ == "__main__":
    main()
