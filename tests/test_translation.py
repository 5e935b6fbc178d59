"""Translation: FreeDict's phrase pairs, BLEU and chrF of the greedy outputs, a user's TSV of pairs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import sacrebleu
import torch

from datamodules.freedict import BASE64, freedict_pairs
from datamodules.seq2seq import Seq2SeqDataModule
from modules.seq2seq import corpus_scores
from tests.helpers import run_cli
from validation import ConfigError

ENTRIES = [
    ("00databaseshort", "German-English FreeDict Dictionary\n"),
    (
        "marke",
        'Marke /mˈaɾkə/ <fem, n, sg>\n [econ.] make <n>\n      "Armbanduhren diverser Marken"  - wristwatches '
        'of various makes\n      "ein LKW (der) Marke DAF"  - a lorry (of the) make DAF\n',
    ),
    ("das buch geht gut", "Das Buch geht gut. /das buːx ɡeːt ɡuːt/\nThe book sells well.\n"),
    ("haus", 'Haus /haʊs/ <neut, n, sg>\nhouse <n>\n      "Armbanduhren diverser Marken"  - a second translation\n'),
]


def base64(value: int) -> str:
    digits = ""
    while True:
        value, digit = divmod(value, 64)
        digits = BASE64[digit] + digits
        if not value:
            return digits


def write_dictionary(directory: Path, pair: str) -> None:
    """A dictd dictionary as Debian ships FreeDict: an index of (headword, offset, length) and gzipped entries."""
    data, index = b"", []
    for headword, entry in ENTRIES:
        raw = entry.encode()
        index.append(f"{headword}\t{base64(len(data))}\t{base64(len(raw))}")
        data += raw
    index.append(f"marken\t{index[1].split(chr(9), 1)[1]}")  # a second headword pointing at the same entry
    (directory / f"freedict-{pair}.index").write_text("\n".join(index) + "\n")
    (directory / f"freedict-{pair}.dict.dz").write_bytes(gzip.compress(data))


def test_freedict_phrases_are_examples_and_sentence_headwords_cleaned_and_distinct(tmp_path: Path) -> None:
    write_dictionary(tmp_path, "deu-eng")
    assert freedict_pairs("deu-eng", tmp_path) == [
        ("Armbanduhren diverser Marken", "wristwatches of various makes"),
        ("ein LKW (der) Marke DAF", "a lorry (of the) make DAF"),
        ("Das Buch geht gut.", "The book sells well."),  # a sentence headword and its translation
    ]  # the meta entry, the word entries and a source seen before (its first translation kept) left out


def test_the_pairs_are_read_once_then_from_the_cache_until_the_dictionary_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datamodules import freedict

    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path / "cache"))
    write_dictionary(tmp_path, "deu-eng")
    first = freedict_pairs("deu-eng", tmp_path)
    (cached,) = (tmp_path / "cache" / "freedict").iterdir()
    reads: list[Path] = []
    monkeypatch.setattr(freedict, "read_pairs", lambda index, entries: reads.append(index) or [("neu", "new")])
    assert freedict_pairs("deu-eng", tmp_path) == first and reads == []  # from the cache
    cached.write_text('[["Das Buch')  # damaged (a full disk): read again and rewritten
    assert freedict_pairs("deu-eng", tmp_path) == [("neu", "new")] and len(reads) == 1
    assert freedict_pairs("deu-eng", tmp_path) == [("neu", "new")] and len(reads) == 1
    index = tmp_path / "freedict-deu-eng.index"
    index.write_text(index.read_text() + "neu\tA\tB\n")  # an updated dictionary: read again
    assert freedict_pairs("deu-eng", tmp_path) == [("neu", "new")] and len(reads) == 2
    assert not list((tmp_path / "cache" / "freedict").glob("*.part"))


def test_a_missing_dictionary_names_the_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"install it with `apt-get install dict-freedict-ita-eng`"):
        freedict_pairs("ita-eng", tmp_path)


@pytest.mark.slow
def test_the_german_english_phrases() -> None:
    """Debian's dict-freedict-deu-eng, which the set-up installs (`experiments/install_data.sh`)."""
    pairs = freedict_pairs("deu-eng")
    assert len(pairs) == 49978 and ("Das Buch geht gut.", "The book sells well.") in pairs
    assert all(source.strip() == source and "<" not in target for source, target in pairs)
    data = Seq2SeqDataModule(source="freedict:deu-eng", max_chars=100, tokenizer="bpe", vocab_size=2000).ready()
    sizes = {split: len(data.splits[split][0]) for split in ("train", "val", "test")}
    assert sum(sizes.values()) == sum(max(len(s), len(t)) <= 100 for s, t in pairs) == 49078
    assert data.tokenizer.decode(data.tokenizer.encode("Die Gehwege sind übersät.")) == "Die Gehwege sind übersät."


def test_corpus_scores_are_sacrebleus() -> None:
    outputs = ["The cat sits on the mat.", "He reads a book today", "Doctors resort to antibiotics."]
    references = ["The cat sat on the mat.", "He is reading a book today.", "Doctors resort to antibiotics often."]
    scores = corpus_scores(outputs, references)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [references]).score)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [references]).score)
    assert corpus_scores(references, references) == {"bleu": pytest.approx(100), "chrf": pytest.approx(100)}


@pytest.mark.slow
def test_a_users_pairs_train_with_bleu_and_chrf_at_test(tmp_path: Path) -> None:
    """A TSV of pairs through the command, with text metrics: the outputs are decoded and scored."""
    rows = "".join(f"zahl {i}\tnumber {i}\n" for i in range(300))
    (tmp_path / "pairs.tsv").write_text("source\ttarget\n" + rows)
    args = ["--config", "transformer_reverse", "--data.source", str(tmp_path / "pairs.tsv"), "--data.tokenizer", "word"]
    options = ["--model.text_metrics", "true", "--trainer.max_epochs", "2", "--checkpoint.monitor", "val/chrf"]
    result = run_cli(*args, *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "transformer_reverse").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["test/bleu"] <= 100 and 0 <= summary["test/chrf"] <= 100
    assert summary["val/chrf_best"] == pytest.approx(max(r["val/chrf"] for r in history(run_dir) if "val/chrf" in r))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["text_metrics"] is True


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_the_translation_references_copy_and_retrieve_on_the_presets_own_test_split(tmp_path: Path) -> None:
    from benchmarks.baselines import translation_references

    nouns = {"Haus": "house", "Baum": "tree", "Auto": "car", "Hund": "dog", "Katze": "cat", "Buch": "book"}
    nouns |= {"Tür": "door", "Straße": "road", "Stadt": "town", "Schiff": "ship"}
    pairs = [(f"das {g} Nummer {i}", f"the {e} number {i}") for i in range(20) for g, e in nouns.items()]
    rows = "".join(f"{source}\t{target}\n" for source, target in pairs)
    (tmp_path / "pairs.tsv").write_text("source\ttarget\n" + rows)
    data = Seq2SeqDataModule(source=str(tmp_path / "pairs.tsv"), tokenizer="bpe", vocab_size=300)
    table = {(name, metric): (value, n) for name, metric, value, n in translation_references(data)}
    sources, targets = data.texts("test")
    copied = corpus_scores(sources, targets)["chrf"]  # a file's pairs split by row (about a tenth in test)
    assert table["copy the source", "test/chrf"] == (pytest.approx(copied), len(targets))
    retrieved = table["nearest training phrase's translation", "test/bleu"][0]
    assert retrieved > table["copy the source", "test/bleu"][0] + 20  # the same noun, another number, is in training
