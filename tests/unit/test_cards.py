"""Dataset and model cards: huggingface_hub parses their metadata; the dataset card lists
exactly the committed parts; an unset license is `unknown` with the reason it matters."""
from huggingface_hub import DatasetCard, ModelCard

from dataset_builder.core.cards import render, size_category
from dataset_builder.core.config import load_config
from dataset_builder.curate.card import dataset_card
from train.config import SFTConfig
from train.export import model_card

STATS = {"funnel": {"rows_in": 9, "rows_out": 6, "rejected": 3,
                    "stages": [{"stage": "filter", "dropped": 3, "reasons": {"too_short": 3}}]},
         "words": {"produced_kept": {"median": 2100, "p10": 1500, "p90": 3000, "max": 3300}},
         "languages": {"out": {"en": 5, "zh": 1}}, "input": "s3://b/gen",
         "input_fingerprint": "f00", "config_hash": "c0ffee", "code_version": "abc"}
GEN = {"config": {"engine": {"model": "gpt-4o-2024-08-06"}, "agentwrite": {"layout": "paper"}}}


def test_dataset_card_loads_with_the_hub_library_and_lists_the_committed_parts():
    meta, body = dataset_card(None, STATS, GEN, ["part-00000.parquet", "part-00001.parquet"])
    card = DatasetCard(render(meta, body))
    assert card.data.license == "unknown" and card.data.language == ["en", "zh"]
    assert card.data.size_categories == ["n<1K"]
    assert card.data.task_categories == ["text-generation"]
    [conf] = card.data.configs
    assert conf["data_files"] == [{"split": "train",
                                   "path": ["part-00000.parquet", "part-00001.parquet"]}]
    assert "`gpt-4o-2024-08-06`" in card.text and "9 rows in, 6 kept, 3 rejected" in card.text
    assert "terms of the model that wrote the answers" in card.text    # why license matters
    meta, body = dataset_card("cc-by-4.0", STATS, GEN, [])
    card = DatasetCard(render(meta, body))
    assert card.data.license == "cc-by-4.0" and "terms of the model" not in card.text


def test_model_card_loads_with_the_hub_library():
    cfg = load_config(SFTConfig, None, ["model=/models/base", "data=s3://b/curated",
                                        "output=/tmp/o", "license=apache-2.0"])
    meta, body = model_card("sft", cfg, {"steps": 40, "final_loss": 1.25},
                            {"data": {"fingerprint": "fp", "rows_kept": 6, "rows_rejected": 1},
                             "code_version": "abc"})
    card = ModelCard(render(meta, body))
    assert card.data.base_model == "/models/base" and card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "text-generation" and "sft" in card.data.tags
    assert "| steps | 40 |" in card.text and "| final_loss | 1.25 |" in card.text


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 6000, 10**5, 10**8)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "100K<n<1M", "n>10M"]
