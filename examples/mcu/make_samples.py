"""Write samples.h: an excerpt of the InternalBleeding16 test series (examples/data) as a C array.

The excerpt holds the labelled anomaly window (test rows 4187-4198) with clean signal around it, so the
bare-metal scorer has something to find. Run:  python make_samples.py [FIRST_ROW] [COUNT] > samples.h
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

DATA = Path(__file__).parents[1] / "data" / "ucr_internalbleeding16_test.csv"


def main(first: int = 3700, count: int = 1000) -> None:
    with DATA.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[first : first + count]
    labelled = [first + i for i, row in enumerate(rows) if row["is_anomaly"] == "1"]
    values = [repr(float(row["value"])) for row in rows]
    print(f"/* InternalBleeding16 (UCR anomaly archive no. 135), test rows {first}-{first + count - 1}:")
    print(" * the 'value' column unchanged, from examples/data/ucr_internalbleeding16_test.csv.")
    print(" * Written by make_samples.py. */")
    print("#ifndef SAMPLES_H\n#define SAMPLES_H\n")
    print(f"#define SAMPLES_COUNT {count}")
    print(f"#define SAMPLES_FIRST_ROW {first}")
    print(f"#define SAMPLES_ANOMALY_FIRST_ROW {labelled[0]}")
    print(f"#define SAMPLES_ANOMALY_LAST_ROW {labelled[-1]}\n")
    print("static const float samples[SAMPLES_COUNT] = {")
    for start in range(0, count, 8):
        print("\t" + ", ".join(f"{v}f" for v in values[start : start + 8]) + ",")
    print("};\n\n#endif")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
