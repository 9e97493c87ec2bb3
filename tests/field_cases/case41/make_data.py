"""Short made-up notices (source, 8-12 words) and long summaries (target, 40-60 words): targets longer than the
tiny BART's 32 positions (train.jsonl, validation.jsonl)."""

import json
from pathlib import Path

here = Path(__file__).resolve().parent
places = ["harbour", "library", "bakery", "station", "museum", "market", "school", "park"]
rows = []
for i in range(40):
    p = places[i % len(places)]
    src = f"notice {i}: the {p} changes its opening hours next week"
    tgt = (
        f"the {p} will open at eight and close at six from monday to friday, at nine on saturday and "
        f"stay closed on sunday; visitors are asked to check the board by the {p} door, where the new hours "
        f"and the holiday dates for the rest of the year are posted, and to ask staff about notice {i}"
    )
    rows.append({"source": src, "summary": tgt})
(here / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
(here / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
print("train 32, validation 8")
