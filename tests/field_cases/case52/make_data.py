"""A GLUE-style saved DatasetDict: train/validation labelled 0/1 (ClassLabel negative/positive), test labelled -1
(hidden labels, as GLUE ships its test splits). Writes glue_like/ next to this script."""

from pathlib import Path

import datasets

here = Path(__file__).resolve().parent
feats = datasets.Features(
    {
        "sentence": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["negative", "positive"]),
        "idx": datasets.Value("int32"),
    }
)
good = [
    "the soup was warm and the bread fresh",
    "friendly staff and a quiet corner table",
    "the best dumplings on the whole street",
    "quick service and fair prices",
    "lovely view of the harbour",
    "a generous plate of noodles",
    "the tea was fragrant and hot",
    "cosy room, kind owner",
]
bad = [
    "the soup was cold and salty",
    "we waited an hour for a sandwich",
    "the table was sticky and loud",
    "stale bread and bitter coffee",
    "rude staff at the counter",
    "the noodles were soggy",
    "overpriced and tiny portions",
    "the room smelled of old oil",
]
rows = [(t, 1) for t in good] + [(t, 0) for t in bad]
train = rows * 3
train = [(f"{t} ({i})", y) for i, (t, y) in enumerate(train)]
val = [(f"{t} again", y) for t, y in rows]
test = [(f"{t} once more", -1) for t, _ in rows]


def ds(part):
    return datasets.Dataset.from_dict(
        {"sentence": [t for t, _ in part], "label": [y for _, y in part], "idx": list(range(len(part)))}, features=feats
    )


datasets.DatasetDict({"train": ds(train), "validation": ds(val), "test": ds(test)}).save_to_disk(
    str(here / "glue_like")
)
print("glue_like: train", len(train), "validation", len(val), "test", len(test), "(test labels all -1)")
