"""Sequence tagging: the corpus readers, the built-in Turkish Web Treebank and its split, the word vocabulary,
entity F1 as the CoNLL script counts it, and a trained tagger predicting, explaining and checking new
sentences (its export is checked with every preset's, in test_export)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import torch

from datamodules.tagging import (
    BUILTIN_CORPORA,
    IGNORED,
    SourceName,
    TaggingDataModule,
    column_sentences,
    conllu_sentences,
    split_sentences,
)
from datamodules.tokenization import tokenizer_from_json
from datamodules.word_vocabulary import WordVocabulary, words_of
from experiments.predict import main as predict
from modules.tagging import entity_spans, is_bio
from tests.preset_runs import PresetRuns
from validation import ConfigError

CONLLU = """# sent_id = 1
# text = Açıklanmayan sorular zor.
1\tAçık\taçık\tNOUN\tNN\t_\t2\tig\t_\tSpaceAfter=No
2\tla\t_\tVERB\tVB\t_\t3\tig\t_\tSpaceAfter=No
3\tnmayan\t_\tADJ\tVJ\t_\t4\trcmod\t_\t_
4-5\tsorular\t_\t_\t_\t_\t_\t_\t_\t_
4\tsoru\tsoru\tNOUN\tNN\t_\t6\tnsubj\t_\t_
5\tlar\t_\tNOUN\tNN\t_\t4\tfixed\t_\t_
5.1\tgizli\t_\tNOUN\tNN\t_\t_\t_\t_\t_
6\tzor\tzor\tADJ\tJJ\t_\t0\troot\t_\tSpaceAfter=No
7\t.\t.\tPUNCT\t.\t_\t6\tp\t_\t_

1\tEvet\tevet\tPRT\tRP\t_\t0\troot\t_\t_
"""


def test_conllu_sentences_keep_syntactic_words_and_join_inflectional_groups_when_asked() -> None:
    plain = conllu_sentences(CONLLU, "x")
    assert plain == [
        (["Açık", "la", "nmayan", "soru", "lar", "zor", "."], ["NOUN", "VERB", "ADJ", "NOUN", "NOUN", "ADJ", "PUNCT"]),
        (["Evet"], ["PRT"]),
    ]
    joined = conllu_sentences(CONLLU, "x", join_groups=True)
    assert joined[0] == (["Açıklanmayan", "soru", "lar", "zor", "."], ["ADJ", "NOUN", "NOUN", "ADJ", "PUNCT"])
    with pytest.raises(ConfigError, match="line 2 has 3 tab-separated columns"):
        conllu_sentences("# c\n1\tA\tNOUN\n", "bad.conllu")


def test_column_files_take_the_first_column_as_word_and_the_last_as_tag() -> None:
    text = "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n"
    assert column_sentences(text, "x") == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter"], ["B-PER"])]
    with pytest.raises(ConfigError, match="line 2 holds a word without a tag"):
        column_sentences("EU B-ORG\nalone\n", "x")


def test_new_text_splits_into_the_corpus_kind_of_words() -> None:
    assert words_of("Ankara'ya 1.5 saatte gittim... (ntvmsnbc.com)") == [
        "Ankara'ya",
        "1.5",
        "saatte",
        "gittim",
        "...",
        "(",
        "ntvmsnbc.com",
        ")",
    ]


def test_the_vocabulary_reads_unknown_words_by_their_known_endings() -> None:
    sentences = [(["Geliyor", "geliyor", "okuyor", "bakıyor", "ev", "ev", "evler", "kediler"], ["VERB"] * 8)]
    vocabulary = WordVocabulary.train(sentences, vocab_size=100)
    assert vocabulary.words == ["geliyor", "ev"]  # seen at least twice, case folded
    ids = {word: vocabulary.encode_word(word) for word in ("GELİYOR", "koşuyor", "masalar", "xyz", "ev")}
    assert vocabulary.decode([ids["koşuyor"]]) == "-yor"  # from okuyor and bakıyor: an ending seen twice
    assert vocabulary.decode([ids["masalar"]]) == "-r"  # -lar never seen; -ar neither; -r is
    assert ids["xyz"] == 1 and vocabulary.decode([ids["ev"]]) == "ev"
    again = tokenizer_from_json(vocabulary.to_json())  # as a run's tokenizer.json is read back, of any kind
    assert isinstance(again, WordVocabulary)
    assert [again.encode_word(w) for w in ids] == list(ids.values()) and again.vocab_size == vocabulary.vocab_size


def test_the_accepted_corpus_names_are_the_tables() -> None:
    assert typing.get_args(SourceName) == tuple(BUILTIN_CORPORA)


def test_the_built_in_treebank_keeps_its_own_split_and_tags() -> None:
    data = TaggingDataModule(batch_size=4)
    data.ready()
    assert {name: len(data.sentences[name]) for name in ("train", "val", "test")} == {
        "train": 3881,
        "val": 485,
        "test": 485,
    }
    assert sum(len(words) for words, _ in data.sentences["test"]) == 6518
    assert data.classes[:4] == ["ADJ", "ADP", "ADV", "AFFIX"] and len(data.classes) == data.num_classes == 14
    # Sentence 9 of web.conllu, the first of its test part: whole words, each tagged as its last group.
    words, tags = data.sentences["test"][0]
    assert len(words) == len(tags) and all(" " not in word for word in words)
    tokens, tagged = next(iter(data.test_dataloader()))
    assert tokens.shape == tagged.shape and ((tokens == data.pad_id) == (tagged == IGNORED)).all()
    assert data.vocab_size == data.tokenizer.vocab_size and data.pad_id == 0


def test_a_corpus_of_yours_is_split_by_sentence_and_its_unseen_tags_are_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "ner.txt"
    corpus.write_text("\n\n".join(f"Ali B-PER\ngeldi O\nword{i} O" for i in range(40)) + "\n")
    data = TaggingDataModule(source=str(corpus), val_fraction=0.2, test_fraction=0.2, batch_size=4)
    data.ready()
    counts = [len(data.sentences[name]) for name in ("train", "val", "test")]
    assert sum(counts) == 40 and min(counts) > 0 and counts[0] > 10
    assert data.sentences == TaggingDataModule(source=str(corpus), val_fraction=0.2, test_fraction=0.2).read()
    assert data.classes == ["B-PER", "O"] and is_bio(data.classes)
    corpus.write_text("Ali B-PER\nVeli O\n\n" * 29 + "Ali B-LOC\n")
    sentences = column_sentences(corpus.read_text(), "x")

    def holds_out_b_loc(split: dict[str, list]) -> bool:
        return all(split.values()) and (["Ali"], ["B-LOC"]) not in split["train"]

    seed = next(s for s in range(100) if holds_out_b_loc(split_sentences(sentences, 0.2, 0.2, s)))
    with pytest.raises(ConfigError, match="labels B-LOC occur only outside the training split"):
        TaggingDataModule(source=str(corpus), seed=seed, val_fraction=0.2, test_fraction=0.2).ready()
    with pytest.raises(ConfigError, match="not found"):
        TaggingDataModule(source=str(tmp_path / "missing.conllu")).ready()


def test_entity_spans_are_read_as_the_conll_script_reads_them() -> None:
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {(0, 2, "PER"), (3, 4, "LOC")}
    assert entity_spans(["I-PER", "I-PER", "I-LOC", "O"]) == {(0, 2, "PER"), (2, 3, "LOC")}  # I- after O starts
    assert entity_spans(["B-PER", "B-PER"]) == {(0, 1, "PER"), (1, 2, "PER")}
    assert not is_bio(["NOUN", "VERB"]) and not is_bio(["B-PER", "NOUN"]) and is_bio(["O", "B-X", "I-X"])


def test_the_tagger_reports_entity_f1_as_counted_by_spans() -> None:
    from cores.tagger import RNNTagger
    from modules.tagging import TaggingTask

    task = TaggingTask(RNNTagger(vocab_size=10, num_classes=3), num_classes=3)
    task.entity_tags = ["B-PER", "I-PER", "O"]
    truth = torch.tensor([[0, 1, 2, 0], [2, 0, IGNORED, IGNORED]])
    # One of the first sentence's two entities found; the second's one, its padding's guesses never read.
    guess = torch.tensor([[0, 1, 2, 2], [2, 0, 0, 0]])
    task.count_entities("val", guess, truth)
    assert task.entity_counts[0].tolist() == [2, 2, 3]  # found, guessed, true
    assert task.epoch_metrics("val")["val/entity_f1"].item() == pytest.approx(2 * 2 / (2 + 3))
    assert task.entity_counts.sum() == 0  # reset for the next epoch


def test_a_run_on_bio_entity_tags_reports_entity_f1_and_one_on_parts_of_speech_does_not(in_tmp: Path) -> None:
    from experiments.run import main as run

    names = ["Ali", "Ayşe", "Veli", "Can"]
    corpus = in_tmp / "ner.txt"
    corpus.write_text("\n\n".join(f"{names[i % 4]} B-PER\nAnkara'ya I-PER\ngitti O" for i in range(60)) + "\n")
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--run.logger=csv", "--data.batch_size=8"]
    assert run(["--config", "lstm_turkish_pos", f"--data.source={corpus}", *short]) == 0
    (run_dir,) = (in_tmp / "runs" / "lstm_turkish_pos").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["val/entity_f1"] <= 1 and 0 <= summary["test/entity_f1"] <= 1 and "test/acc" in summary
    corpus.write_text("\n\n".join(f"{names[i % 4]} NOUN\ngitti VERB" for i in range(60)) + "\n")
    assert run(["--config", "lstm_turkish_pos", f"--data.source={corpus}", *short, "--run.root=pos"]) == 0
    (run_dir,) = (in_tmp / "pos" / "lstm_turkish_pos").iterdir()
    assert not any("entity_f1" in key for key in json.loads((run_dir / "summary.json").read_text()))


def test_a_trained_tagger_tags_explains_and_writes_new_sentences(
    preset_runs: PresetRuns, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = preset_runs("lstm_turkish_pos")
    sentences = ["Bu kitabı çok beğendim.", "Yarın Ankara'ya gideceğiz"]
    assert predict([str(run_dir), *sentences, "--output", "tags.jsonl"]) == 0
    printed = capsys.readouterr().out
    assert "Bu kitabı çok beğendim." in printed and "\n  Bu/" in printed and "Ankara'ya/" in printed
    rows = [json.loads(line) for line in (in_tmp / "tags.jsonl").read_text().splitlines()]
    assert [row["words"] for row in rows] == [words_of(text) for text in sentences]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    tags = checkpoint["TaggingDataModule"]["inference"]["classes"]
    for row in rows:
        assert len(row["tags"]) == len(row["words"]) == len(row["confidence"]) and set(row["tags"]) <= set(tags)
        assert row["tagged"] == " ".join(f"{w}/{t}" for w, t in zip(row["words"], row["tags"], strict=True))

    assert predict([str(run_dir), sentences[0], "--explain", "--explain_dir", "why"]) == 0
    out = capsys.readouterr().out
    assert "001-Bu-kitab-ok-be-endim.html  5 answers explained; the largest error:" in out
    page = (in_tmp / "why" / "001-Bu-kitab-ok-be-endim.html").read_text()
    assert page.count("Attributions to the logit of") == 5 and "bu → " in page
    assert predict([str(run_dir), "x " * 200]) == 2
    assert "input 1 has 200 words; this model tags at most 128 at once" in capsys.readouterr().err
    assert predict([str(run_dir), "bir", "--temperature", "0.5"]) == 2
    assert "--temperature does not apply to this model (TaggingTask takes no options)" in capsys.readouterr().err
