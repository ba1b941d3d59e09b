"""The .ts reader of the UEA archive's files: the fixture in the archive's layout reads case by
case at each case's own length, and a malformed file is refused in one line naming its line."""

import numpy as np
import pytest
from conftest import ROOT

from cerebral.errors import DataError
from cerebral.tsfile import read_ts

FIXTURE = ROOT / "tests" / "fixtures" / "japanese_vowels"
TRAIN_LENGTHS = [7, 29, 12, 15, 9, 20, 26, 10, 18]  # one utterance per speaker, 1 to 9
DATA_LINE = 11  # the first case of the fixture


def test_the_fixture_reads_case_by_case_at_each_length():
    series, labels, classes = read_ts(FIXTURE / "JapaneseVowels_TRAIN.ts")
    assert [s.shape for s in series] == [(length, 12) for length in TRAIN_LENGTHS]
    assert all(s.dtype == np.float32 for s in series)
    assert classes == tuple("123456789") and labels.tolist() == list(range(9))
    first = (FIXTURE / "JapaneseVowels_TRAIN.ts").read_text().splitlines()[DATA_LINE - 1]
    dimensions = first.split(":")[:-1]
    np.testing.assert_array_equal(series[0][:, 3], np.array(dimensions[3].split(","), dtype=np.float32))


def with_first_case(text, edit):
    lines = text.splitlines()
    lines[DATA_LINE - 1] = edit(lines[DATA_LINE - 1])
    return "\n".join(lines) + "\n"


def first_value(case, value):
    return value + case[case.index(","):]


MALFORMED = {
    "a value that is not a number": (lambda t: with_first_case(t, lambda c: first_value(c, "abc")),
                                     DATA_LINE, "a value is not a number"),
    "a missing value": (lambda t: with_first_case(t, lambda c: first_value(c, "?")), DATA_LINE, "not a number"),
    "an infinite value": (lambda t: with_first_case(t, lambda c: first_value(c, "inf")), DATA_LINE, "not finite"),
    "an unknown label": (lambda t: with_first_case(t, lambda c: c.rsplit(":", 1)[0] + ":10"), DATA_LINE,
                         "label '10' is not one of @classLabel 1 2 3 4 5 6 7 8 9"),
    "a dimension too few": (lambda t: with_first_case(t, lambda c: c.split(":", 1)[1]), DATA_LINE,
                            "11 dimensions, but @dimensions says 12"),
    "dimensions of two lengths": (lambda t: with_first_case(t, lambda c: c.split(",", 1)[1]), DATA_LINE,
                                  "differ in length ([6, 7])"),
    "a case without a label": (lambda t: with_first_case(t, lambda c: c.replace(":", ",")), DATA_LINE,
                               "needs its series and a label"),
    "an unknown header": (lambda t: t.replace("@missing false", "@fancy yes"), 5, "unknown header line '@fancy yes'"),
    "time stamps": (lambda t: t.replace("@timeStamps false", "@timeStamps true"), 4, "@timeStamps true is not supported"),
    "a dimension count that is no number": (lambda t: t.replace("@dimensions 12", "@dimensions twelve"), 7,
                                            "@dimensions must be a positive integer, not 'twelve'"),
    "no class labels": (lambda t: t.replace("@classLabel true 1 2 3 4 5 6 7 8 9", "@classLabel false"), 10,
                        "@classLabel must be 'true'"),
    "no @data line": (lambda t: t.split("@data")[0], 9, "no @data line"),
    "no case after @data": (lambda t: t.split("@data")[0] + "@data\n", 10, "no case after @data"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_file_is_refused_in_one_line_naming_the_line(name, tmp_path):
    edit, line, problem = MALFORMED[name]
    path = tmp_path / "JapaneseVowels_TRAIN.ts"
    path.write_text(edit((FIXTURE / "JapaneseVowels_TRAIN.ts").read_text()))
    with pytest.raises(DataError) as error:
        read_ts(path)
    message = str(error.value)
    assert message.startswith(f"{path}, line {line}: ") and problem in message and "\n" not in message
