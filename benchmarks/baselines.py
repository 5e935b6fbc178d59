"""The simple references a practitioner fits first, on exactly each preset's splits.

    python -m benchmarks.baselines [--presets lstm_sentiment lstm_sunspots]

Each preset's datamodule is built as `python -m experiments.run --config <preset>` builds it (same source,
split, seed, tokenizer), and the reference is fitted on its training split, tuned on its validation split
where it has a setting, and scored on its test split, in the unit the preset reports:

- images: multinomial logistic regression on standardised pixels, 300 L-BFGS iterations (test accuracy);
- text classification: multinomial naive Bayes on word uni+bigram counts, TF-IDF + logistic regression,
  and NBSVM (logistic regression on binary uni+bigram features scaled by naive Bayes log-count ratios,
  Wang & Manning 2012: the strongest linear model on short sentiment texts) (test accuracy);
- language models: unigram and bigram models over the preset's own tokens, add-k smoothed (test nats
  per token, the preset's `test/loss`, and bits per character);
- time series: the naive "repeat the last value" forecast and a linear autoregressive model on the
  preset's window (test MSE in the preset's normalised units);
- speech: chance (the most frequent training class), and logistic regression on each clip's 13 MFCCs
  averaged over its frames, with their standard deviations (test accuracy).
- DNA/protein classification: the majority class, and logistic regression on the frequencies of k-mers
  (of both strands for DNA), k and C chosen on validation (test accuracy).

- tagging: each word's most frequent training tag, and unseen words tagged by the most frequent tag of all,
  or of their longest ending seen in training (test accuracy over words);
- translation: copying the source, and the translation of the most similar training source (TF-IDF
  character 2-4-grams), scored with sacreBLEU's BLEU and chrF.

Generated sequence-to-sequence tasks (reversal) have no such reference and are skipped. Prints the
machine, then one row per reference.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from benchmarks.precision import build_preset
from datamodules.audio import AudioDataModule
from datamodules.biosequence import FastaDataModule
from datamodules.image import ImageDataModule
from datamodules.language_model import LanguageModelDataModule
from datamodules.seq2seq import TASKS, Seq2SeqDataModule
from datamodules.tagging import TaggingDataModule
from datamodules.text import TextClassificationDataModule
from datamodules.timeseries import TimeSeriesDataModule
from datamodules.word_vocabulary import ENDINGS, normal
from experiments.hardware import machine_summary
from experiments.presets import preset_names

Row = tuple[str, str, float, int]  # reference, metric, value on the test split, test examples


def best_on_val(settings: list[float], score: Callable[[float], float]) -> float:
    """The setting with the highest validation score."""
    return max(settings, key=score)


def image_references(data: ImageDataModule) -> Iterator[Row]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def flat(split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = data.splits[split]
        pixels = images.float().div(255).sub(data.mean).div(data.std)  # the model's normalisation
        return pixels.flatten(1).double().numpy(), labels.numpy()

    (x, y), (x_val, y_val), (x_test, y_test) = flat("train"), flat("val"), flat("test")
    with warnings.catch_warnings():  # 300 L-BFGS iterations: a budget, not convergence, on 54k images
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = {c: LogisticRegression(C=c, max_iter=300).fit(x, y) for c in (0.01, 0.1, 1.0)}
    c = best_on_val(list(fitted), lambda c: fitted[c].score(x_val, y_val))
    yield f"logistic regression on pixels (C={c})", "test/acc", fitted[c].score(x_test, y_test), len(y_test)


def text_references(data: TextClassificationDataModule) -> Iterator[Row]:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB

    texts = data.texts
    labels = {split: data.splits[split][1].numpy() for split in ("train", "val", "test")}
    counts = CountVectorizer(ngram_range=(1, 2)).fit(texts["train"])
    x = {split: counts.transform(texts[split]) for split in texts}
    bayes = {a: MultinomialNB(alpha=a).fit(x["train"], labels["train"]) for a in (0.1, 0.3, 1.0, 3.0)}
    a = best_on_val(list(bayes), lambda a: bayes[a].score(x["val"], labels["val"]))
    n = len(labels["test"])
    yield f"naive Bayes, word 1-2-grams (alpha={a})", "test/acc", bayes[a].score(x["test"], labels["test"]), n
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts["train"])
    x = {split: tfidf.transform(texts[split]) for split in texts}
    logistic = {c: LogisticRegression(C=c, max_iter=1000).fit(x["train"], labels["train"]) for c in (1.0, 3.0, 10.0)}
    c = best_on_val(list(logistic), lambda c: logistic[c].score(x["val"], labels["val"]))
    yield f"TF-IDF 1-2-grams + logistic regression (C={c})", "test/acc", logistic[c].score(x["test"], labels["test"]), n
    yield nbsvm(texts, labels)


def nbsvm(texts: dict[str, list[str]], labels: dict[str, np.ndarray]) -> Row:
    """Logistic regression on binary word uni+bigram indicators, each scaled by its naive Bayes log-count
    ratio log(p(gram | class) / p(gram | other classes)) (add-one smoothed; one ratio per class, one-vs-rest)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    binary = CountVectorizer(ngram_range=(1, 2), binary=True).fit(texts["train"])
    x = {split: binary.transform(texts[split]).tocsr() for split in texts}
    y, classes = labels["train"], np.unique(labels["train"])
    scaled = []  # one-vs-rest: per class, every split's features scaled by that class's ratios
    for k in classes:  # (with two classes, two mirror-image models: argmax still decides)
        inside, outside = 1 + x["train"][y == k].sum(0), 1 + x["train"][y != k].sum(0)
        ratio = np.asarray(np.log(inside / inside.sum()) - np.log(outside / outside.sum())).ravel()
        scaled.append({split: x[split].multiply(ratio).tocsr() for split in x})
    accuracy = {}
    for c in (0.3, 1.0, 3.0):
        models = [
            LogisticRegression(C=c, max_iter=2000).fit(f["train"], y == k) for f, k in zip(scaled, classes, strict=True)
        ]
        scores = {
            split: np.stack([m.decision_function(f[split]) for m, f in zip(models, scaled, strict=True)], 1)
            for split in ("val", "test")
        }
        accuracy[c] = {split: float((classes[v.argmax(1)] == labels[split]).mean()) for split, v in scores.items()}
    c = best_on_val(list(accuracy), lambda c: accuracy[c]["val"])
    return f"NBSVM, word 1-2-grams (C={c})", "test/acc", accuracy[c]["test"], len(labels["test"])


def language_model_references(data: LanguageModelDataModule) -> Iterator[Row]:
    """n-gram models of the pairs the model is scored on: each window's (previous token, next token)."""
    vocab = data.vocab_size

    def pairs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        windows = data.splits[split]
        return windows[:, :-1].flatten(), windows[:, 1:].flatten()

    (prev, nxt), (prev_val, nxt_val), (prev_test, nxt_test) = pairs("train"), pairs("val"), pairs("test")
    unigram = torch.bincount(nxt, minlength=vocab).double()
    bigram = torch.zeros(vocab, vocab, dtype=torch.float64).index_put_((prev, nxt), torch.ones(len(nxt)).double(), True)

    def unigram_nats(k: float, targets: torch.Tensor) -> float:
        p = (unigram + k) / (unigram.sum() + k * vocab)
        return float(-p[targets].log().mean())

    def bigram_nats(k: float, before: torch.Tensor, targets: torch.Tensor) -> float:
        p = (bigram + k) / (bigram.sum(1, keepdim=True) + k * vocab)
        return float(-p[before, targets].log().mean())

    ks = [0.01, 0.1, 1.0]
    per_char = 1 / math.log(2) / data.chars_per_token
    k = best_on_val(ks, lambda k: -unigram_nats(k, nxt_val))
    nats = unigram_nats(k, nxt_test)
    yield f"unigram (add-{k}; {nats * per_char:.2f} bits/char)", "test/loss", nats, len(nxt_test)
    k = best_on_val(ks, lambda k: -bigram_nats(k, prev_val, nxt_val))
    nats = bigram_nats(k, prev_test, nxt_test)
    yield f"bigram (add-{k}; {nats * per_char:.2f} bits/char)", "test/loss", nats, len(nxt_test)


def timeseries_references(data: TimeSeriesDataModule) -> Iterator[Row]:
    from sklearn.linear_model import Ridge

    def flat(split: str) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets = data.splits[split]
        return inputs.flatten(1).double().numpy(), targets.flatten(1).double().numpy()

    (x, y), (x_val, y_val), (x_test, y_test) = flat("train"), flat("val"), flat("test")
    inputs, targets = data.splits["test"]
    naive = inputs[:, -1:, :].expand_as(targets)
    yield "naive: repeat the last value", "test/mse", float(((naive - targets) ** 2).mean()), len(y_test)

    def mse(model: Ridge, features: np.ndarray, truth: np.ndarray) -> float:
        # Ridge returns (N,) for a single target column (N, 1): reshaped, or the difference broadcasts to (N, N).
        return float(((model.predict(features).reshape(truth.shape) - truth) ** 2).mean())

    fitted = {a: Ridge(alpha=a).fit(x, y) for a in (0.01, 0.1, 1.0, 10.0)}
    a = best_on_val(list(fitted), lambda a: -mse(fitted[a], x_val, y_val))
    window = inputs.shape[1]
    yield f"linear autoregression on {window} lags (ridge {a})", "test/mse", mse(fitted[a], x_test, y_test), len(y_test)


def audio_references(data: AudioDataModule) -> Iterator[Row]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from datamodules.spectrogram import mfcc

    def averaged_mfcc(split: str) -> tuple[np.ndarray, np.ndarray]:
        waveforms, labels = data.splits[split]
        coefficients = torch.cat([mfcc(data.features(chunk)) for chunk in waveforms.split(256)])  # (N, 13, T)
        return torch.cat([coefficients.mean(2), coefficients.std(2)], 1).double().numpy(), labels.numpy()

    (x, y), (x_val, y_val), (x_test, y_test) = averaged_mfcc("train"), averaged_mfcc("val"), averaged_mfcc("test")
    majority = np.bincount(y).argmax()
    yield "chance: the most frequent training class", "test/acc", float((y_test == majority).mean()), len(y_test)
    scaler = StandardScaler().fit(x)
    x, x_val, x_test = scaler.transform(x), scaler.transform(x_val), scaler.transform(x_test)
    fitted = {c: LogisticRegression(C=c, max_iter=2000).fit(x, y) for c in (0.01, 0.1, 1.0, 10.0)}
    c = best_on_val(list(fitted), lambda c: fitted[c].score(x_val, y_val))
    yield f"logistic regression on averaged MFCCs (C={c})", "test/acc", fitted[c].score(x_test, y_test), len(y_test)


def kmer_frequencies(counts: Any, sequences: list[str], dna: bool) -> Any:
    """(N, k-mers) frequencies of each sequence's k-mers: sequences of any length compare; DNA counts both
    strands, as a binding site reads the same on either."""
    from sklearn.preprocessing import normalize

    from datamodules.kmers import reverse_complement

    x = counts.transform(sequences)
    if dna:
        x = x + counts.transform([reverse_complement(s) for s in sequences])
    return normalize(x.astype(float), norm="l1")


def kmer_references(data: FastaDataModule) -> Iterator[Row]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    sequences, dna = data.sequences, data.hparams["alphabet"] == "dna"
    labels = {split: data.splits[split][1].numpy() for split in sequences}
    n, majority = len(labels["test"]), np.bincount(labels["train"]).argmax()
    yield "majority class of the training split", "test/acc", float((labels["test"] == majority).mean()), n
    scores = {}  # (k, C) -> (val accuracy, test accuracy)
    for k in range(3, 8) if dna else range(1, 4):
        counts = CountVectorizer(analyzer="char", ngram_range=(k, k), lowercase=False).fit(sequences["train"])
        x = {split: kmer_frequencies(counts, sequences[split], dna) for split in sequences}
        for c in (1.0, 10.0, 100.0, 1000.0):
            model = LogisticRegression(C=c, max_iter=3000).fit(x["train"], labels["train"])
            scores[k, c] = (model.score(x["val"], labels["val"]), model.score(x["test"], labels["test"]))
    k, c = max(scores, key=lambda key: scores[key][0])
    strands = ", both strands" if dna else ""
    yield f"logistic regression on {k}-mer frequencies{strands} (C={c})", "test/acc", scores[k, c][1], n


def translation_references(data: Seq2SeqDataModule) -> Iterator[Row]:
    """Copying the source, and retrieval: the translation of the training source most like each test source
    (cosine of TF-IDF character 2-4-grams), both scored with sacreBLEU's BLEU and chrF."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from modules.seq2seq import corpus_scores

    texts = {split: data.texts(split) for split in ("train", "test")}
    (train_sources, train_targets), (test_sources, references) = texts["train"], texts["test"]
    n = len(references)
    for name, outputs in (("copy the source", test_sources), ("nearest training phrase's translation", None)):
        if outputs is None:
            grams = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(train_sources)
            similarity = grams.transform(test_sources) @ grams.transform(train_sources).T  # (test, train), sparse
            outputs = [train_targets[i] for i in np.asarray(similarity.argmax(axis=1)).ravel()]
        for metric, value in corpus_scores(outputs, references).items():
            yield name, f"test/{metric}", value, n


def most_frequent_tags(data: TaggingDataModule, endings: bool) -> Row:
    """Each test word tagged with its most frequent training tag; a word never seen in training with the most
    frequent tag of its longest ending seen in training (3, 2 or 1 letters; with `endings`), else with the
    most frequent tag of all. Words are compared NFKC-normalised and lower-cased, as the vocabulary does."""
    tags_of: dict[str, Counter[str]] = defaultdict(Counter)
    for words, tags in data.sentences["train"]:
        for word, tag in zip(words, tags, strict=True):
            word = normal(word)
            tags_of[word][tag] += 1
            for size in ENDINGS if endings else ():
                if len(word) > size:
                    tags_of[f"-{word[-size:]}"][tag] += 1
    commonest = Counter(tag for counts in tags_of.values() if counts for tag in counts.elements()).most_common(1)
    fallback = commonest[0][0]

    def guess(word: str) -> str:
        word = normal(word)
        keys = [word, *(f"-{word[-size:]}" for size in (ENDINGS if endings else ()) if len(word) > size)]
        found = next((tags_of[key] for key in keys if key in tags_of), None)
        return found.most_common(1)[0][0] if found else fallback

    test = data.sentences["test"]
    pairs = [(guess(word), tag) for words, tags in test for word, tag in zip(words, tags, strict=True)]
    name = "most frequent tag per word or word ending" if endings else "most frequent tag per word (else of all)"
    return name, "test/acc", sum(g == t for g, t in pairs) / len(pairs), len(pairs)


def tagging_references(data: TaggingDataModule) -> Iterator[Row]:
    yield most_frequent_tags(data, endings=False)
    yield most_frequent_tags(data, endings=True)


def references(data: object) -> Iterator[Row]:
    if isinstance(data, FastaDataModule):
        data.ready()  # reads, checks, splits and tokenizes once
        return kmer_references(data)
    if isinstance(data, AudioDataModule):
        data.setup()  # decodes the clips once
        return audio_references(data)
    if isinstance(data, ImageDataModule):
        data.setup()  # loads the images once
        return image_references(data)
    if isinstance(data, TextClassificationDataModule | LanguageModelDataModule | TimeSeriesDataModule):
        data.ready()  # reads, splits and tokenizes once
    if isinstance(data, TextClassificationDataModule):
        return text_references(data)
    if isinstance(data, LanguageModelDataModule):
        return language_model_references(data)
    if isinstance(data, TimeSeriesDataModule):
        return timeseries_references(data)
    if isinstance(data, TaggingDataModule):
        data.ready()  # reads, splits and builds the vocabulary once
        return tagging_references(data)
    if isinstance(data, Seq2SeqDataModule) and data.hparams["source"] not in TASKS:
        data.ready()
        return translation_references(data)
    return iter(())  # generated sequence-to-sequence tasks: no simple reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=preset_names(), choices=preset_names())
    args = parser.parse_args()
    print(machine_summary())
    print(f"{'preset':<24} {'reference':<52} {'metric':<10} {'value':>8} {'test n':>8} {'fit s':>6}")
    for preset in args.presets:
        _, data = build_preset(preset)
        started = time.perf_counter()
        for reference, metric, value, count in references(data):
            seconds = time.perf_counter() - started
            print(f"{preset:<24} {reference:<52} {metric:<10} {value:>8.4f} {count:>8,} {seconds:>6.1f}", flush=True)
            started = time.perf_counter()


if __name__ == "__main__":
    main()
