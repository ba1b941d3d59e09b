"""The `.ts` format of the UEA and UCR time-series archives (as sktime and aeon write it), read
without either package: comment lines (#), a header of @keys, then after @data one case per line,
its dimensions separated by ':' (each a comma-separated series) and its class label last.

Only what the archive's classification problems use is read: no time stamps, no missing values,
class labels on. Anything else is refused in one line that names the file and the line.
"""

from pathlib import Path

import numpy as np

from cerebral.errors import DataError

# header key -> the values this reader accepts (None: any)
HEADER = {"@problemname": None, "@timestamps": ("false",), "@missing": ("false",), "@univariate": ("true", "false"),
          "@dimensions": None, "@equallength": ("true", "false"), "@serieslength": None, "@classlabel": None}
COUNTS = ("@dimensions", "@serieslength")  # header keys whose value is a positive integer


def read_ts(path):
    """(series, labels, class_labels) of a classification .ts file: one float32 array [T_i, D] per
    case at its own length, each case's label as an index into `class_labels`, the labels in the
    order @classLabel lists them."""
    path = Path(path)
    header, series, labels, number = {}, [], [], 1

    def refuse(number, problem):
        raise DataError(f"{path}, line {number}: {problem}; it is not a classification .ts file of the UEA archive")

    with open(path, encoding="utf-8") as f:
        lines = enumerate(f, start=1)
        for number, line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition(" ")
            key, value = name.lower(), value.strip()
            if key == "@data":
                break
            if key not in HEADER:
                refuse(number, f"unknown header line {line[:40]!r}")
            if HEADER[key] is not None and value.lower() not in HEADER[key]:
                refuse(number, f"{name} {value} is not supported (only {' or '.join(HEADER[key])})")
            if key in COUNTS and not (value.isdigit() and int(value) > 0):
                refuse(number, f"{name} must be a positive integer, not {value!r}")
            header[key] = value
        else:
            refuse(number, "no @data line")
        classes = header.get("@classlabel", "false").split()
        if len(classes) < 2 or classes[0].lower() != "true":
            refuse(number, "@classLabel must be 'true' followed by the labels")
        classes = tuple(classes[1:])
        dimensions = header.get("@dimensions")
        for number, line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            *fields, label = line.split(":")
            if not fields:
                refuse(number, "a case needs its series and a label, separated by ':'")
            if label not in classes:
                refuse(number, f"label {label[:20]!r} is not one of @classLabel {' '.join(classes)}")
            if dimensions is not None and len(fields) != int(dimensions):
                refuse(number, f"{len(fields)} dimensions, but @dimensions says {dimensions}")
            try:
                case = [np.array(field.split(","), dtype=np.float32) for field in fields]
            except ValueError as e:
                refuse(number, f"a value is not a number ({e})")
            if len({len(d) for d in case}) != 1:
                refuse(number, f"its dimensions differ in length ({sorted({len(d) for d in case})})")
            if not np.isfinite(np.concatenate(case)).all():
                refuse(number, "a value is not finite")
            series.append(np.stack(case, axis=1))
            labels.append(classes.index(label))
    if not series:
        refuse(number, "no case after @data")
    return series, np.array(labels, dtype=np.int64), classes
