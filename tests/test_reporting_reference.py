"""The reference-values file: parsed, every value sourced, lookups by model/teacher/eps."""

from __future__ import annotations

import math

import pytest

from lipsim.reporting.reference import (
    REFERENCE_CSV,
    ReferenceError,
    canonical_model,
    load_reference,
    lookup_table1,
    lookup_table2,
    parse_eps,
)

HEADER = "table,model,teacher,column,attack,norm,eps,value,source,note\n"


def test_packaged_reference_file():
    ref = load_reference()
    assert REFERENCE_CSV.name == "reference_values.csv"
    assert (ref["source"] != "").all()
    # docs/method.md section 9
    assert lookup_table1(ref, "dreamsim_ensemble", None, "natural") == (96.2, "DreamSim README")
    assert lookup_table1(ref, "margin0.2", "dreamsim_ensemble", "natural")[0] == 88.5
    assert lookup_table1(ref, "lipsim-margin0.50", "dreamsim_ensemble", "natural")[0] == 85.1
    assert lookup_table1(ref, "pretrained", "dreamsim_ensemble", "natural")[0] == 86.6
    assert lookup_table1(ref, "dino_vitb16", None, "natural")[0] == 94.8
    assert lookup_table2(ref, "lipsim-margin0.5", "apgd", "l2", 3.0, "dreamsim_ensemble")[0] == 53.1
    assert (
        lookup_table2(ref, "lipsim-pretrained", "APGD", "linf", 0.0157, "dreamsim_ensemble")[0]
        == 8.6
    )
    # a LipSim row is compared only when the caller names its teacher
    assert math.isnan(lookup_table2(ref, "lipsim-pretrained", "apgd", "linf", 4 / 255)[0])
    assert lookup_table2(ref, "dreamsim_ensemble", "apgd", "l2", 3)[0] == 0.9
    # the paper's certified Table 1 values: rows present, values left for the user to fill
    cert = ref[ref["column"].str.startswith("certified_")]
    assert len(cert) == 9
    assert cert["value"].isna().all()
    assert set(cert["source"]) == {"LipSim paper Table 1 (fill in)"}
    assert math.isnan(lookup_table1(ref, "margin0.5", "dreamsim_ensemble", "certified_36")[0])
    # another teacher's LipSim is not the paper's LipSim
    assert math.isnan(lookup_table1(ref, "margin0.5", "demo", "natural")[0])


def test_helpers():
    assert parse_eps("4/255") == pytest.approx(4 / 255)
    assert parse_eps("3") == 3.0 and math.isnan(parse_eps(""))
    assert canonical_model("lipsim-margin0.50") == canonical_model("margin0.5") == "margin0.5"
    assert canonical_model("lipsim-pretrained") == "pretrained"


@pytest.mark.parametrize(
    "row, message",
    [
        ("table1,m,,natural,,,,abc,src,\n", "not a number"),
        ("table1,m,,natural,,,,1.0,,\n", "source"),
        ("table3,m,,natural,,,,1.0,src,\n", "table must be"),
        ("table2,m,,score,apgd,,3,1.0,src,\n", "attack, norm and eps"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path, row, message):
    p = tmp_path / "ref.csv"
    p.write_text(HEADER + "table1,ok,,natural,,,,1.0,src,\n" + row)
    with pytest.raises(ReferenceError, match=message) as info:
        load_reference(p)
    assert "ref.csv: row 3" in str(info.value)


def test_duplicates_and_missing_columns(tmp_path):
    p = tmp_path / "ref.csv"
    p.write_text(
        HEADER
        + "table1,margin0.5,,natural,,,,1.0,a,\n"
        + "table1,lipsim-margin0.50,,natural,,,,2.0,b,\n"
    )
    with pytest.raises(ReferenceError, match="more than once"):
        load_reference(p)
    p.write_text("table,model\ntable1,m\n")
    with pytest.raises(ReferenceError, match="missing columns"):
        load_reference(p)
    with pytest.raises(ReferenceError, match="not found"):
        load_reference(tmp_path / "nope.csv")
