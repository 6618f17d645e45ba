"""Each source is a composite PTransform: checked with TestPipeline and assert_that."""
import apache_beam as beam
import pytest
from beam_helpers import test_pipeline
from apache_beam.testing.util import assert_that, equal_to, is_not_empty

from datasets import amazon_slice, movielens_slice
from tworec.beam.sequences import DeduplicateById
from tworec.beam.sources.amazon import Amazon2018
from tworec.beam.sources.csv_files import CsvFiles, CsvFormatError
from tworec.beam.sources.movielens import MovieLens100K
from tworec.beam.sources.synthetic import Synthetic, SyntheticConfig
from tworec.contract import Reject


def _counts(pcoll, label):
    return pcoll | label >> beam.combiners.Count.Globally()


def test_movielens_reads_ratings_items_in_latin1_and_users(tmp_path):
    folder = movielens_slice(tmp_path / "ml", ratings=300)
    with test_pipeline() as p:
        data = p | MovieLens100K(str(folder))
        assert_that(_counts(data["interactions"], "N"), equal_to([300]), label="ratings")
        assert_that(data["read"], equal_to([("interaction", 300), ("item", 1682), ("user", 943)]),
                    label="read")
        assert_that(data["rejected"], equal_to([]), label="nothing rejected")
        first = data["interactions"] | beam.Filter(lambda r: r.origin == "u.data:1")
        assert_that(first | "T1" >> beam.Map(lambda r: (r.user_id, r.item_id, r.timestamp, r.rating)),
                    equal_to([("196", "242", 881250949, 3.0)]), label="first rating")
        toy = data["items"] | beam.Filter(lambda i: i.item_id == "1") | "T2" >> beam.Map(
            lambda i: (i.title, i.text, i.categories))
        assert_that(toy, equal_to([("Toy Story (1995)",
                                    "Toy Story (1995). Categories: Animation, Children's, Comedy.",
                                    ("Animation", "Children's", "Comedy"))]), label="toy story")
        accented = data["items"] | "Acc" >> beam.Filter(lambda i: i.title.startswith("Misérables"))
        assert_that(_counts(accented, "NA"), equal_to([1]), label="latin-1 decoded")
        user1 = data["users"] | beam.Filter(lambda u: u.user_id == "1") | "T3" >> beam.Map(
            lambda u: u.attributes)
        assert_that(user1, equal_to([("age:18-24", "gender:M", "occupation:technician", "zip1:8")]),
                    label="user attributes")


def test_amazon_cleans_text_and_duplicates_are_counted(tmp_path):
    folder = amazon_slice(tmp_path / "amz", ratings=400)
    with test_pipeline() as p:
        data = p | Amazon2018(str(folder))
        assert_that(_counts(data["interactions"], "N"), equal_to([400]), label="ratings")
        items = data["items"] | DeduplicateById("item", Reject.DUPLICATE_ITEM)
        assert_that(_counts(items["unique"], "NU"), equal_to([2320]), label="unique asins")
        assert_that(_counts(items["rejected"], "ND"), equal_to([3385 - 2320]), label="duplicates")
        bad_text = items["unique"] | beam.Filter(
            lambda i: "<span" in i.text or "&amp;" in i.text or i.title.startswith("<"))
        assert_that(bad_text, equal_to([]), label="no html left")
        reason = items["unique"] | beam.Filter(lambda i: i.item_id == "B00005N7SD")
        assert_that(reason, is_not_empty(), label="known asin present")


def test_csv_source_parses_headers_quotes_iso_times_and_rejects_bad_rows(tmp_path):
    (tmp_path / "interactions.csv").write_text(
        "item_id,user_id,timestamp,rating\n"       # columns found by name, any order
        "a,u1,1700000000,4\n"
        "b,u1,2024-01-02T03:04:05Z,5\n"
        "a,u 2,1700000000,3\n"                     # bad user id
        "a,u2,yesterday,3\n"                       # bad timestamp
        "a,u2,1700000000,11\n"                     # out of range
        "a,u2\n"                                   # wrong column count
        "\n", encoding="utf-8")
    (tmp_path / "items.csv").write_text(
        'item_id,title,text,categories\n'
        'a,"Knitting, Vol. 2",Wool &amp; needles,Crafts|Hobbies\n'
        'b,Zen,,\n', encoding="utf-8")
    (tmp_path / "users.csv").write_text("user_id,country\nu1,DE\n", encoding="utf-8")
    with test_pipeline() as p:
        data = p | CsvFiles(str(tmp_path))
        assert_that(data["interactions"] | beam.Map(lambda r: (r.user_id, r.item_id, r.timestamp, r.rating)),
                    equal_to([("u1", "a", 1700000000, 4.0), ("u1", "b", 1704164645, 5.0)]),
                    label="valid rows")
        assert_that(data["rejected"] | beam.Map(lambda r: (r.reason, r.origin)), equal_to([
            ("bad_user_id", "interactions.csv:4"), ("bad_timestamp", "interactions.csv:5"),
            ("rating_out_of_range", "interactions.csv:6"), ("wrong_column_count", "interactions.csv:7"),
            ("empty_line", "interactions.csv:8")]), label="rejections")
        assert_that(data["items"] | "IT" >> beam.Map(lambda i: (i.item_id, i.text, i.categories)), equal_to([
            ("a", "Knitting, Vol. 2. Wool & needles. Categories: Crafts, Hobbies.", ("Crafts", "Hobbies")),
            ("b", "Zen.", ())]), label="items")
        assert_that(data["users"] | "U" >> beam.Map(lambda u: (u.user_id, u.attributes)),
                    equal_to([("u1", ("country:DE",))]), label="users")
        assert_that(data["read"], equal_to([("interaction", 7), ("item", 2), ("user", 1)]), label="read")


def test_csv_source_names_missing_columns(tmp_path):
    (tmp_path / "interactions.csv").write_text("user,item_id,timestamp\n")
    (tmp_path / "items.csv").write_text("item_id,title\n")
    with pytest.raises(CsvFormatError, match="missing user_id"):
        with test_pipeline() as p:
            _ = p | CsvFiles(str(tmp_path))


def test_synthetic_is_exact_in_size_deterministic_and_readable():
    config = SyntheticConfig(interactions=3000, seed=3)
    with test_pipeline() as p:
        data = p | Synthetic(config)
        assert_that(_counts(data["interactions"], "N"), equal_to([3000]), label="exact size")
        assert_that(_counts(data["items"], "NI"), equal_to([config.num_items]), label="items")
        # Item text is made of real words of the item's topic (its first category).
        from tworec.beam.sources.synthetic_words import TOPICS
        off_topic = data["items"] | beam.Filter(
            lambda i: not any(w in i.text.lower() for w in TOPICS[i.categories[0]]))
        assert_that(off_topic, equal_to([]), label="topic words in text")
        # Late items exist: some interactions happen with items released after the start.
        unreleased = data["interactions"] | beam.Filter(lambda r: r.timestamp < config.start)
        assert_that(unreleased, equal_to([]), label="times inside the period")


def test_synthetic_generation_is_a_pure_function_of_config():
    from tworec.beam.sources import synthetic

    config = SyntheticConfig(interactions=3000, seed=3)
    first = [synthetic.user_interactions(config, u) for u in range(20)]
    synthetic.build_catalog.cache_clear()
    synthetic.interactions_per_user.cache_clear()
    assert [synthetic.user_interactions(config, u) for u in range(20)] == first
    other = [synthetic.user_interactions(SyntheticConfig(interactions=3000, seed=4), u) for u in range(20)]
    assert other != first
    # New items arrive during the period (natural cold start).
    catalog = synthetic.build_catalog(config)
    assert 0.2 < (catalog.release > 0).mean() < 0.6


def test_a_truncated_gzip_fails_the_job_naming_file_and_line(tmp_path):
    import gzip

    from tworec.beam.io import DataFileError

    meta = "\n".join('{"asin": "B%04d", "title": "t", "description": ["%s"]}' % (i, "x" * 200)
                     for i in range(2000)).encode()
    data = gzip.compress(meta)
    (tmp_path / "meta_Test.json.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "Test.csv").write_text("B0001,u1,5.0,1005177600\n")
    with pytest.raises(Exception) as failure:
        with test_pipeline() as p:
            _ = p | Amazon2018(str(tmp_path))
    message = str(failure.value)
    assert "meta_Test.json.gz" in message and "cannot read past line" in message, message
    assert DataFileError.__name__ in message or "truncated" in message
