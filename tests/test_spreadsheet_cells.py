"""Every CSV the tool writes is safe to open in a spreadsheet (OWASP's CSV-injection rule): a text cell
that starts with =, +, -, @, a tab or a CR gets a leading ', numbers stay numbers, nothing else changes."""

from __future__ import annotations

import csv
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.runs.heads_files import write_head_table_csv
from utils.io import FORMULA_LEAD, csv_text, spreadsheet_cell

cells = st.one_of(st.text(max_size=20), st.sampled_from(FORMULA_LEAD).flatmap(lambda c: st.text(max_size=12).map(lambda t: c + t)),
                  st.integers(), st.floats(allow_nan=False), st.none(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(cells, min_size=1, max_size=5), min_size=1, max_size=5))
def test_no_text_cell_reads_as_a_formula(rows):
    back = list(csv.reader(io.StringIO(csv_text(rows), newline="")))
    assert len(back) == len(rows)
    for row, got in zip(rows, back):
        for v, g in zip(row, got):
            if isinstance(v, str):
                if g.startswith(FORMULA_LEAD):  # only a plain number may lead with + or -
                    assert g == v and float(g) == float(v)
                else:
                    assert g == v or (g == "'" + v and v.startswith(FORMULA_LEAD))
            else:  # numbers, None, booleans: written as the csv module writes them
                assert g == ("" if v is None else str(v))


def test_known_payloads_and_numbers():
    assert spreadsheet_cell('=HYPERLINK("http://x","y")') == '\'=HYPERLINK("http://x","y")'
    assert spreadsheet_cell("+cmd|' /C calc'!A0") == "'+cmd|' /C calc'!A0"
    assert spreadsheet_cell("@SUM(A1)") == "'@SUM(A1)" and spreadsheet_cell("\t=1") == "'\t=1"
    assert spreadsheet_cell("-1+2") == "'-1+2" and spreadsheet_cell("-0.5") == "-0.5" and spreadsheet_cell("-inf") == "-inf"
    assert spreadsheet_cell(-0.5) == -0.5 and spreadsheet_cell("a=b") == "a=b"


def test_heads_csv_keeps_its_numbers(tmp_path):
    s = np.array([[-0.5, 1e-7], [float("-inf"), 2.0]])
    write_head_table_csv(tmp_path / "h.csv", s, -s, np.array([[1, 0], [0, 3]]))
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert [r["mean_s_img"] for r in rows] == ["-0.5", "1e-07", "-inf", "2.0"]
    assert [r["mean_entropy"] for r in rows] == ["0.5", "-1e-07", "inf", "-2.0"]
