"""The table schema: inference with reasons, overrides, JSON, encode/decode, check, readers."""

import json

import numpy as np
import pandas as pd
import pytest

from vaekit.data.inference import infer_schema
from vaekit.data.schema import Schema
from vaekit.data.table_files import read_table
from vaekit.errors import ConfigError, DataError

N = 60


def table() -> pd.DataFrame:
    """Every type, an ID, a constant and a row number; fixed values, missing cells in three columns."""
    i = np.arange(N)
    df = pd.DataFrame({
        "id": [f"c{k:03d}" for k in i],
        "height": 150.0 + (i * 37 % 41) + 0.25,                      # continuous
        "price": np.exp((i * 13 % 17) / 3.0) + 0.5,                  # positive, right-skewed
        "visits": (i * 7) % 15,                                      # count 0..14
        "smoker": np.where(i % 3 == 0, "yes", "no"),                 # binary words
        "member": i % 4 == 1,                                        # booleans
        "city": np.array(["lyon", "nice", "paris", "brest"])[i % 4],  # categorical text
        "shift": (i % 5) - 2,                                        # integers -2..2: ordinal
        "grade": np.array(["low", "mid", "high"])[i % 3],
        "version": 3,                                                 # constant
        "name": [f"n{k % 40}" for k in i],                           # 40 levels in 60 cells
        "row": i,                                                     # row number
    })
    df["height"] = df["height"].astype("float64")
    df.loc[[4, 9], "height"] = np.nan
    df.loc[7, "city"] = np.nan
    df.loc[[2, 11], "visits"] = np.nan  # integers with missing cells: pandas makes them float64
    return df


def test_inference_gives_each_type_with_its_reason():
    s = infer_schema(table())
    kinds = {c.name: c.kind for c in s.columns}
    assert kinds == {"height": "continuous", "price": "positive", "visits": "count",
                     "smoker": "binary", "member": "binary", "city": "categorical",
                     "shift": "ordinal", "grade": "categorical"}
    reasons = {c.name: c.reason for c in s.columns}
    assert reasons["visits"] == "integers 0..14, 15 levels, 2 missing -> count"
    assert reasons["height"] == "numbers 150.25..190.25, 2 missing -> continuous"
    assert reasons["city"] == "text, 4 levels, 1 missing -> categorical"
    assert reasons["shift"] == "integers -2..2, 5 levels -> ordinal"
    assert reasons["smoker"] == "2 levels no, yes -> binary"
    assert reasons["price"].startswith("numbers 1.5..") and "skewness" in reasons["price"]
    assert dict(s.dropped) == {"id": "text, all 60 values distinct -> ID-like",
                               "version": "constant 3",
                               "name": "text, 40 levels in 60 cells (mostly distinct) -> ID-like; "
                                       "declare name=categorical to keep it",
                               "row": "integers 0..59, each once -> row number (ID-like)"}
    assert s.names == ["height", "price", "visits", "smoker", "member", "city", "shift", "grade"]
    # binary words: 'no' is 0, 'yes' is 1; booleans False, True; text levels sorted
    assert s["smoker"].levels == ("no", "yes") and s["member"].levels == (False, True)
    assert s["city"].levels == ("brest", "lyon", "nice", "paris")
    x = table()["height"].dropna()
    assert s["height"].loc == pytest.approx(x.mean(), rel=1e-12)
    assert s["height"].scale == pytest.approx(x.std(ddof=0), rel=1e-12)
    assert s["price"].loc == pytest.approx(np.log(table()["price"]).mean(), rel=1e-12)


def test_the_printed_table_has_one_line_per_column_and_the_left_out_ones():
    text = infer_schema(table()).table()
    lines = text.splitlines()
    assert lines[0].split() == ["column", "type", "reason"]
    assert len(lines) == 1 + 8 + 4
    assert any(line.split()[:2] == ["visits", "count"] for line in lines)
    assert any(line.startswith("id") and "(left out)" in line for line in lines)


@pytest.mark.parametrize("values, held", [
    (pd.date_range("2024-01-01", periods=N, freq="D"), "datetime64"),
    ([f"2024-03-{k % 28 + 1:02d}" for k in range(N)], "text like '2024-03-01'"),
    ([f"{k % 28 + 1}/03/2024" for k in range(N)], "text like '1/03/2024'"),
])
def test_dates_are_refused_with_one_line_saying_what_to_do(values, held):
    df = table().assign(when=values)
    with pytest.raises(DataError) as e:
        infer_schema(df)
    msg = str(e.value)
    assert "\n" not in msg and "column 'when' holds dates" in msg and held in msg
    assert "drop it, or convert it" in msg
    assert infer_schema(df, ["when=drop"]).dropped[-1] == ("when", "declared drop")


def test_overrides_change_types_and_bad_ones_are_config_errors():
    s = infer_schema(table(), ["visits=continuous", "shift=continuous", "grade=ordinal:low<mid<high",
                               "id=categorical", "height=drop"])
    assert s["shift"].kind == "continuous"
    assert s["visits"].kind == "continuous" and s["visits"].reason == "declared continuous"
    assert s["grade"].kind == "ordinal" and s["grade"].levels == ("low", "mid", "high")
    assert s["id"].kind == "categorical" and len(s["id"].levels) == N
    assert "height" not in s.names and ("height", "declared drop") in s.dropped
    with pytest.raises(ConfigError, match="unknown type 'cont'; did you mean 'count'"):
        infer_schema(table(), ["visits=cont"])
    with pytest.raises(ConfigError, match="no column 'vists'; did you mean 'visits'"):
        infer_schema(table(), ["vists=count"])
    with pytest.raises(ConfigError, match="must be NAME=TYPE"):
        infer_schema(table(), ["visits"])
    with pytest.raises(DataError, match=r"column 'shift', row 1: -2 is not a count"):
        infer_schema(table(), ["shift=count"])
    with pytest.raises(DataError, match="column 'city' is declared count but holds 'lyon'"):
        infer_schema(table(), ["city=count"])
    with pytest.raises(DataError, match="declared order low<high must name each seen level"):
        infer_schema(table(), ["grade=ordinal:low<high"])


def test_json_round_trip_is_equal_and_the_reader_is_strict():
    s = infer_schema(table(), ["grade=ordinal:low<mid<high"])
    text = s.to_json()
    assert Schema.from_json(text) == s
    obj = json.loads(text)
    bad = [({**obj, "extra": 1}, "unknown key(s) extra"),
           ({**obj, "version": 2}, "schema version 2"),
           ({**obj, "columns": [{**obj["columns"][0], "kind": "gaussian"}]}, "unknown type 'gaussian'"),
           ({**obj, "columns": [{**obj["columns"][0], "colour": "red"}]}, "unknown key(s) colour"),
           ({**obj, "columns": [{**obj["columns"][0], "dtype": "complex128"}]}, "unsupported dtype"),
           ({**obj, "columns": [{**obj["columns"][3], "levels": ["no"]}]}, "a binary column cannot"),
           ({**obj, "columns": [{**obj["columns"][0], "scale": -1.0}]}, "'scale' must be positive")]
    for o, msg in bad:
        with pytest.raises(DataError) as e:
            Schema.from_json(json.dumps(o))
        assert msg in str(e.value)
    with pytest.raises(DataError, match="not valid JSON"):
        Schema.from_json("{")


def test_encode_decode_round_trip_is_exact_with_names_order_and_dtypes():
    df = table()
    s = infer_schema(df)
    x = s.encode(df)
    assert x.shape == (N, 8) and x.dtype == np.float64
    assert np.isnan(x[[4, 9], 0]).all() and np.isnan(x[7, 5]) and np.isnan(x[[2, 11], 2]).all()
    assert np.isnan(x).sum() == 5
    np.testing.assert_array_equal(x[:4, 5], [1, 2, 3, 0])  # lyon nice paris brest
    np.testing.assert_array_equal(x[:3, 3], [1, 0, 0])  # yes no no
    np.testing.assert_array_equal(x[:5, 6], [0, 1, 2, 3, 4])  # shift -2..2 -> levels 0..4
    back = s.decode(x)
    want = df[s.names].astype({"visits": "Int64"})  # a count stays integer, missing cells as <NA>
    pd.testing.assert_frame_equal(back, want)
    assert str(back["member"].dtype) == "bool" and str(back["shift"].dtype) == "int64"


def test_decode_keeps_integers_integers_and_categories_from_the_seen_ones():
    df = table().dropna().drop(columns="row")
    s = infer_schema(df)
    assert s.width == 8
    x = s.encode(df)
    x[:, 2] += 0.4  # a draw of a count that is not on the grid is rounded
    x[0, 0] = np.nan
    back = s.decode(x)
    assert str(back["visits"].dtype) == "int64"
    np.testing.assert_array_equal(back["visits"], df["visits"])
    assert pd.isna(back["height"].iloc[0])
    assert set(back["city"]) <= {"brest", "lyon", "nice", "paris"}
    with pytest.raises(DataError, match="level indices must lie in 0..3"):
        s.decode(np.where(np.arange(8) == 5, 4.0, x[:1]))


def test_pandas_category_and_missing_integers_come_back_nullable():
    df = pd.DataFrame({"c": pd.Categorical(["a", "b", "a", None, "c"]), "k": [1, 0, 2, 3, 2]})
    s = infer_schema(df)
    assert s["c"].kind == "categorical" and s["c"].dtype == "category"
    back = s.decode(s.encode(df))
    pd.testing.assert_frame_equal(back, df)
    x = s.encode(df)
    x[1, 1] = np.nan
    assert str(s.decode(x)["k"].dtype) == "Int64"
    size = pd.Categorical(["M", "S", "XL", "M", None], categories=["S", "M", "L", "XL"], ordered=True)
    s = infer_schema(pd.DataFrame({"size": size, "k": [1, 0, 2, 3, 2]}))
    assert s["size"].kind == "ordinal" and s["size"].levels == ("S", "M", "XL")  # L never seen
    assert s["size"].reason == "ordered category, 3 levels, 1 missing -> ordinal"
    np.testing.assert_array_equal(s.encode(pd.DataFrame({"size": size, "k": 0}))[:, 0],
                                  [1, 0, 2, 1, np.nan])
    back = s.decode(s.encode(pd.DataFrame({"size": size, "k": 0})))["size"]
    assert back.cat.ordered and list(back.cat.categories) == ["S", "M", "XL"]
    assert list(back.astype(object).where(back.notna(), None)) == ["M", "S", "XL", "M", None]


def test_check_names_the_column_and_the_row():
    s = infer_schema(table())
    new = table()
    new.loc[5, "city"] = "paris"
    s.check(new)  # a seen level
    cases = [("city", 5, "rome", "column 'city', row 6: unknown category 'rome' (seen: brest, lyon"),
             ("visits", 3, 2.5, "column 'visits', row 4: 2.5 is not a count"),
             ("visits", 8, -1, "column 'visits', row 9: -1 is not a count"),
             ("price", 1, 0.0, "column 'price', row 2: 0 is not positive"),
             ("height", 3, "tall", "column 'height', row 4: 'tall' is not a number")]
    for name, row, value, msg in cases:
        bad = table()
        bad[name] = bad[name].astype(object)
        bad.loc[row, name] = value
        with pytest.raises(DataError) as e:
            s.check(bad, "new.csv")
        assert str(e.value).startswith("new.csv: " + msg) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(DataError, match="column 'city' is missing"):
        s.check(table().drop(columns="city"))


def test_readers_give_dataframes_and_one_line_for_bad_files(tmp_path):
    df = table()
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    back = read_table(path)
    assert list(back.columns) == list(df.columns)
    assert back["city"].isna().sum() == 1 and back["height"].isna().sum() == 2
    s = infer_schema(back)
    assert s == infer_schema(df)  # the same schema from the file as from the frame
    text = tmp_path / "na.csv"
    text.write_text("a,b\nNA,1\nx,\nNA,3\nx,4\n")
    na = read_table(text)
    assert list(na["a"]) == ["NA", "x", "NA", "x"] and na["b"].isna().sum() == 1  # NA is a word
    pq = tmp_path / "t.parquet"
    df.to_parquet(pq)
    pd.testing.assert_frame_equal(read_table(pq), df)
    files = {"ragged.csv": "a,b\n1,2\n3,4,5\n", "dup.csv": "a,a\n1,2\n", "empty.csv": "",
             "header.csv": "a,b\n", "bad.parquet": "not parquet", "t.txt": "a\n1\n"}
    msgs = {"ragged.csv": "different number of cells", "dup.csv": "'a' appears twice",
            "empty.csv": "empty or has no header", "header.csv": "header but no rows",
            "bad.parquet": "not a readable Parquet file", "t.txt": "must be a .csv"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(DataError) as e:
            read_table(tmp_path / name)
        assert msgs[name] in str(e.value) and "\n" not in str(e.value), str(e.value)
    (tmp_path / "latin.csv").write_bytes("a\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_table(tmp_path / "latin.csv")
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "none.csv")


def test_tables_with_nothing_to_model_are_refused():
    with pytest.raises(DataError, match="no column is left to model"):
        infer_schema(pd.DataFrame({"id": ["a", "b", "c"], "k": [1, 1, 1]}))
    with pytest.raises(DataError, match="the table is empty"):
        infer_schema(pd.DataFrame({"a": []}))


def test_numbers_with_few_repeated_values_are_ordinal_levels():
    """Cylinders 4/6/8, a 1..7 rating and ages coded 17.5, 22, 27 get a probability per value
    (a count's or a Gaussian's spread would put mass between them); a handful of distinct
    values in as many rows stays numeric, and so do counts from 0, with few levels or many."""
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"cylinders": rng.choice([4, 6, 8], n), "rating": rng.integers(1, 8, n),
                       "age": rng.choice([17.5, 22.0, 27.0, 32.0], n),
                       "visits": rng.poisson(8.0, n), "kids": rng.poisson(1.2, n),
                       "height": rng.normal(170, 8, n)})
    s = infer_schema(df)
    assert len(np.unique(df["kids"])) <= 10  # few values, but counts from 0: a count
    assert [s[c].kind for c in df.columns] == ["ordinal", "ordinal", "ordinal", "count", "count",
                                               "continuous"]
    assert s["cylinders"].levels == (4, 6, 8) and s["age"].levels == (17.5, 22.0, 27.0, 32.0)
    assert s["rating"].reason == "integers 1..7, 7 levels -> ordinal"
    back = s.decode(s.encode(df))
    assert back["cylinders"].tolist() == df["cylinders"].tolist() and back["age"].dtype == "float64"
    # the same values written as text (a column with a stray word) match the numeric levels
    text = df.head(3).astype({"cylinders": object})
    text.loc[1, "cylinders"] = "6"
    assert s.encode(text)[1, 0] == 1
    with pytest.raises(DataError, match=r"row 1: unknown category 5 .*declare cylinders=count"):
        s.encode(df.head(1).assign(cylinders=5))
    text.loc[2, "cylinders"] = "six"
    with pytest.raises(DataError, match=r"column 'cylinders', row 3: 'six' is not a number"):
        s.encode(text)
    assert infer_schema(pd.DataFrame({"kids": [0, 2, 1, 3, 5]}))["kids"].kind == "count"
