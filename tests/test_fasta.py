"""Biological sequences: FASTA files of a user's (labels from headers, a table, or one file per class), k-mer
tokens, reverse complements, the built-in Oct4/MafK data, the 1-D CNN, and the mistakes a user can make."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from cores.cnn1d import SequenceCNNClassifier
from datamodules.bio_sources import TEST_CHROMOSOMES, VAL_CHROMOSOMES
from datamodules.biosequence import FastaDataModule
from datamodules.kmers import KmerTokenizer, clean_sequence, reverse_complement
from datamodules.special_tokens import PAD_ID, UNK_ID
from experiments.run import main
from tests.helpers import logged_tables
from validation import ConfigError

MOTIF = "TTGACA"  # the -35 box of E. coli sigma-70 promoters: planted in one class of the made-up files


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def made_up_records(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(id, sequence, label): random 40-bp DNA, the motif planted in every "promoter"."""
    generator = random.Random(seed)
    records = []
    for index in range(count):
        sequence = "".join(generator.choice("ACGT") for _ in range(40))
        label = "promoter" if index % 2 else "background"
        if label == "promoter":
            start = generator.randrange(0, 40 - len(MOTIF))
            sequence = sequence[:start] + MOTIF + sequence[start + len(MOTIF) :]
        records.append((f"seq{index}", sequence, label))
    return records


def fasta(records: list[tuple[str, str, str]], header: str = "{id}|{label}", width: int = 15) -> str:
    """FASTA text with sequences wrapped at `width` letters, as most tools write them."""
    lines = []
    for record_id, sequence, label in records:
        lines.append(">" + header.format(id=record_id, label=label))
        lines += [sequence[i : i + width] for i in range(0, len(sequence), width)]
    return "\n".join(lines) + "\n"


def test_multi_line_lower_case_records_with_labels_in_their_headers(tmp_path: Path) -> None:
    text = (
        "; a comment line, as old FASTA files have\n"
        ">r1|promoter E. coli upstream region\n"
        "acgtAC\n"
        "\n"
        "GT ac\n"
        ">r2|background\n"
        "TTTT\n"
        "uuAA\n"  # RNA letters: U is read as T
    )
    data = FastaDataModule(source=write(tmp_path / "s.fa", text), val_fraction=0.5, test_fraction=0.5)
    records, _ = data.read()
    assert [(r.id, r.sequence, r.label, r.line) for r in records] == [
        ("r1", "acgtACGTac", "promoter", 2),
        ("r2", "TTTTuuAA", "background", 6),
    ]
    assert clean_sequence(records[0].sequence, "dna", "error", "r1") == "ACGTACGTAC"
    assert clean_sequence(records[1].sequence, "dna", "error", "r2") == "TTTTTTAA"


def test_a_gzipped_fasta_is_read_as_it_is_and_a_damaged_one_named(tmp_path: Path) -> None:
    text = ">r1|bound\nACGT\n>r2|unbound\nTTGA\n"
    plain = FastaDataModule(source=write(tmp_path / "s.fa", text), val_fraction=0.5, test_fraction=0.5).read()[0]
    (tmp_path / "s.fa.gz").write_bytes(gzip.compress(text.encode()))
    data = FastaDataModule(source=str(tmp_path / "s.fa.gz"), val_fraction=0.5, test_fraction=0.5)
    assert [(r.id, r.sequence, r.label) for r in data.read()[0]] == [(r.id, r.sequence, r.label) for r in plain]
    (tmp_path / "cut.fa.gz").write_bytes(gzip.compress(text.encode())[:-6])
    data = FastaDataModule(source=str(tmp_path / "cut.fa.gz"), val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match=r"cut.fa.gz is a damaged gzip file \(.*\); compress it again, or unzip it"):
        data.read()


def test_labels_from_a_pattern_a_table_and_one_file_per_class(tmp_path: Path) -> None:
    records = made_up_records(60)
    expected = {record_id: label for record_id, _, label in records}

    def labels_of(data: FastaDataModule) -> dict[str, str]:
        data.ready()
        assert data.num_classes == 2 and data.classes == ["background", "promoter"]
        ids = [i for split in ("train", "val", "test") for i in data.ids[split]]
        labels = [data.classes[y] for split in ("train", "val", "test") for y in data.splits[split][1].tolist()]
        assert sorted(ids) == sorted(expected)  # every record once, in one split
        return dict(zip(ids, labels, strict=True))

    pattern = write(tmp_path / "pattern.fa", fasta(records, header="{id} class={label} length=40"))
    assert labels_of(FastaDataModule(source=pattern, label_pattern=r"class=(\w+)")) == expected

    plain = write(tmp_path / "plain.fasta", fasta(records, header="{id} some description"))
    table = write(tmp_path / "labels.csv", "id,label\n" + "".join(f"{i},{label}\n" for i, _, label in records[::-1]))
    assert labels_of(FastaDataModule(source=plain, labels=table)) == expected

    renamed = write(tmp_path / "labels.tsv", "name\tclass\n" + "".join(f"{i}\t{la}\n" for i, _, la in records))
    data = FastaDataModule(source=plain, labels=renamed, id_column="name", label_column="class")
    assert labels_of(data) == expected

    folder = tmp_path / "classes"
    for label in ("promoter", "background"):
        write(folder / f"{label}.fa", fasta([r for r in records if r[2] == label], header="{id}"))
    write(folder / "README.txt", "not a FASTA file: ignored")
    assert labels_of(FastaDataModule(source=str(folder))) == expected


def test_the_split_of_a_users_records_is_seeded_and_disjoint(tmp_path: Path) -> None:
    source = write(tmp_path / "s.fa", fasta(made_up_records(400)))
    first = FastaDataModule(source=source, val_fraction=0.2, test_fraction=0.1).ready()
    again = FastaDataModule(source=source, val_fraction=0.2, test_fraction=0.1).ready()
    other = FastaDataModule(source=source, val_fraction=0.2, test_fraction=0.1, seed=1).ready()
    assert first.ids == again.ids and first.ids["test"] != other.ids["test"]  # type: ignore[attr-defined]
    sizes = {split: len(ids) for split, ids in first.ids.items()}  # type: ignore[attr-defined]
    assert sum(sizes.values()) == 400 and 50 < sizes["val"] < 110 and 20 < sizes["test"] < 70


def test_kmer_ids_are_lexicographic_and_windows_with_n_are_unknown() -> None:
    tokenizer = KmerTokenizer("dna", 3)
    assert tokenizer.vocab_size == 4 + 64
    # ACG = 0*16 + 1*4 + 2 = 6 -> id 10; CGT = 1*16 + 2*4 + 3 = 27 -> 31; GTN holds N; TNA too
    assert tokenizer.encode("ACGTNA") == [10, 31, UNK_ID, UNK_ID]
    assert tokenizer.encode("AC") == []  # shorter than k
    assert tokenizer.decode([10, 31]) == "ACGT"
    sequence = "".join(random.Random(1).choice("ACGT") for _ in range(50))
    for k in (1, 2, 4, 6):
        kmers = KmerTokenizer("dna", k)
        ids = kmers.encode(sequence)
        assert len(ids) == 50 - k + 1 and min(ids) >= 4 and max(ids) < kmers.vocab_size
        assert kmers.decode([PAD_ID, *ids, PAD_ID]) == sequence  # padding skipped, overlaps merged
    protein = KmerTokenizer("protein", 1)
    assert protein.vocab_size == 4 + 20 and protein.decode(protein.encode("MKVLAX")) == "MKVLAN"[:5] + "X"
    assert KmerTokenizer("protein", 2).encode("AC") == [4 + 0 * 20 + 1]


def test_reverse_complement() -> None:
    assert reverse_complement("ACGTN") == "NACGT"
    assert reverse_complement("AACG") == "CGTT"
    generator = random.Random(0)
    for _ in range(20):
        sequence = "".join(generator.choice("ACGTN") for _ in range(generator.randrange(8, 40)))
        assert reverse_complement(reverse_complement(sequence)) == sequence
        assert Counter(reverse_complement(sequence)) == Counter(sequence.translate(str.maketrans("ACGT", "TGCA")))


def test_words_of_k_letters() -> None:
    tokenizer = KmerTokenizer("dna", 3, stride=3)
    assert tokenizer.encode("ACGTTTGGA") == [10, 4 + 3 * 16 + 3 * 4 + 3, 4 + 2 * 16 + 2 * 4 + 0]  # ACG TTT GGA
    assert tokenizer.encode("ACGTTTGG") == tokenizer.encode("ACGTTT") and tokenizer.covered(2) == 6
    assert tokenizer.decode(tokenizer.encode("ACGTTTGGA")) == "ACGTTTGGA"
    assert (
        KmerTokenizer("dna", 4, stride=2).decode(KmerTokenizer("dna", 4, stride=2).encode("ACGTACGTAC")) == "ACGTACGTAC"
    )
    with pytest.raises(ConfigError, match="stride must be between 1 and k=3"):
        KmerTokenizer("dna", 3, stride=4)


@pytest.mark.parametrize(("k", "stride"), [(1, 1), (3, 1), (4, 4)])
def test_reverse_complement_augmentation_flips_training_sequences_only(k: int, stride: int, tmp_path: Path) -> None:
    records = made_up_records(200)
    records[0] = ("n", "ACGTNACGTACGTAGGGCCA", "promoter")  # an unknown base, and 20 letters: not a multiple of 4
    source = write(tmp_path / "s.fa", fasta(records))
    settings = {"source": source, "k": k, "stride": stride, "batch_size": 8, "bucket": False}
    data = FastaDataModule(**settings, reverse_complement=1.0).ready()
    plain = FastaDataModule(**settings).ready()
    tokenizer = data.tokenizer
    for split in ("train", "val", "test"):
        count = len(data.ids[split])  # type: ignore[attr-defined]
        tokens, _ = data.fetch(split, torch.arange(count))  # type: ignore[attr-defined]
        unchanged, _ = plain.fetch(split, torch.arange(count))  # type: ignore[attr-defined]
        assert tokens.shape == unchanged.shape  # the other strand has as many tokens
        for row, same, sequence in zip(tokens, unchanged, data.sequences[split], strict=True):  # type: ignore[attr-defined]
            spanned = tokenizer.decode(same.tolist())  # type: ignore[union-attr]
            assert sequence.startswith(spanned) or "N" in sequence
            shown = tokenizer.decode(row.tolist())  # type: ignore[union-attr]
            if split == "train":
                assert shown == reverse_complement(spanned) or "N" in sequence
                original = sequence[: len(spanned)]  # an N: compare the tokens of the true other strand
                assert row[row != PAD_ID].tolist() == tokenizer.encode(reverse_complement(original))  # type: ignore[union-attr]
            else:
                assert torch.equal(row, same)
    half = FastaDataModule(source=source, reverse_complement=0.5, batch_size=64, bucket=False).ready()
    torch.manual_seed(0)
    tokens, _ = half.fetch("train", torch.arange(64))  # type: ignore[attr-defined]
    unchanged, _ = FastaDataModule(source=source, batch_size=64, bucket=False).ready().fetch("train", torch.arange(64))  # type: ignore[attr-defined]
    flipped = (tokens != unchanged).any(1).float().mean()
    assert 0.3 < flipped < 0.7


def test_protein_records(tmp_path: Path) -> None:
    first, second = ("mkvlAX", "MVHLTPEEK"), ("WYC", "GHW*")  # a stop '*' ends some
    text = "".join(f">P{i}|{'kinase' if i % 2 else 'globin'}\n{first[i % 2]}\n{second[i % 3 > 0]}\n" for i in range(40))
    data = FastaDataModule(source=write(tmp_path / "p.faa", text), alphabet="protein", val_fraction=0.2).ready()
    assert data.classes == ["globin", "kinase"] and data.vocab_size == 4 + 20  # type: ignore[attr-defined]
    sequences = {s for split in data.sequences.values() for s in split}  # type: ignore[attr-defined]
    assert sequences == {"MKVLAXGHW", "MKVLAXWYC", "MVHLTPEEKGHW", "MVHLTPEEKWYC"}  # the stop '*' dropped
    tokens, _ = data.splits["train"]  # type: ignore[attr-defined]
    shown = {data.tokenizer.decode(t.tolist()) for t in tokens}  # type: ignore[union-attr]
    assert shown <= sequences and any(UNK_ID in t.tolist() for t in tokens)  # X: an unknown amino acid
    # M, V and H are IUPAC codes of DNA too: L is the first letter no DNA has
    with pytest.raises(
        ConfigError, match=r"record P0 \(line 1\) has 'L' at position 4, not a DNA base; is it a protein"
    ):
        FastaDataModule(source=str(tmp_path / "p.faa"), val_fraction=0.2).ready()


def test_ambiguity_codes_are_refused_or_masked(tmp_path: Path) -> None:
    source = write(tmp_path / "s.fa", ">a|x\nACGTRACGT\n>b|y\nACGT\n")
    with pytest.raises(ConfigError, match=r"record a \(line 1\) has 'R' at position 5, an ambiguity code"):
        FastaDataModule(source=source, val_fraction=0.5, test_fraction=0.5).ready()
    assert clean_sequence("ACGTRYN", "dna", "mask", "a") == "ACGTNNN"
    assert clean_sequence("MKBZ*", "protein", "mask", "p") == "MKXX"
    with pytest.raises(ConfigError, match="not a DNA base; is it a protein"):
        clean_sequence("ACGTE", "dna", "mask", "a")  # E is no IUPAC code: masking does not hide it
    with pytest.raises(ConfigError, match="'-' at position 6, not a DNA base"):
        clean_sequence("ACGTR-", "dna", "mask", "a")  # an ambiguity code first does not hide the gap after it
    with pytest.raises(ConfigError, match="'-' at position 3, not an amino acid"):
        clean_sequence("MK-V", "protein", "mask", "p")  # alignment gaps are not letters


def bad_cases() -> list[tuple[str, dict[str, str], str]]:
    """(name, {file name: content}, the message expected); the FASTA file is s.fa, a table labels.csv."""
    good = fasta(made_up_records(6))
    plain = fasta(made_up_records(6), header="{id}")
    ids = "".join(f"seq{i},{'promoter' if i % 2 else 'background'}\n" for i in range(6))
    return [
        ("empty-record", {"s.fa": ">a|x\n>b|y\nACGT\n"}, r"record a\|x \(line 1\) has no sequence"),
        ("empty-last-record", {"s.fa": ">a|x\nACGT\n>b|y\n\n"}, r"record b\|y \(line 3\) has no sequence"),
        ("no-header", {"s.fa": "ACGTACGT\nACGT\n"}, "line 1 holds sequence before any '>' header: not FASTA"),
        ("empty-file", {"s.fa": "\n\n"}, "is empty"),
        ("header-without-id", {"s.fa": ">\nACGT\n"}, "line 1: a header without an id"),
        ("unknown-nucleotide", {"s.fa": good.replace("seq3|promoter\n", "seq3|promoter\nJ")}, "'J' at position 1"),
        ("no-label", {"s.fa": plain}, r"record seq0 \(line 1\) has no label in its header"),
        (
            "duplicate-id",
            {"s.fa": good + ">seq2|x\nACGT\n"},
            r"record seq2 \(line 25\) repeats the id of .*s.fa line 9",
        ),
        (
            "table-missing-id",
            {"s.fa": plain, "labels.csv": "id,label\n" + ids.split("\n", 1)[1]},
            "no label for 1 record",
        ),
        ("table-missing-column", {"s.fa": plain, "labels.csv": "id,class\n" + ids}, "has no column label"),
        ("table-empty-cell", {"s.fa": plain, "labels.csv": "id,label\n" + ids + "seq9,\n"}, "line 8 has no value"),
        (
            "table-duplicate-id",
            {"s.fa": plain, "labels.csv": "id,label\n" + ids + "seq1,a\n"},
            "line 8 repeats id seq1",
        ),
        ("table-extra-id", {"s.fa": plain, "labels.csv": "id,label\n" + ids + "other,a\n"}, "labels other, which no"),
        ("one-class", {"s.fa": fasta([(f"r{i}", "ACGTACGT", "only") for i in range(20)])}, r"have 1 label\(s\)"),
    ]


@pytest.mark.parametrize(("files", "message"), [c[1:] for c in bad_cases()], ids=[c[0] for c in bad_cases()])
def test_bad_fasta_input(files: dict[str, str], message: str, tmp_path: Path) -> None:
    for name, content in files.items():
        write(tmp_path / name, content)
    labels = str(tmp_path / "labels.csv") if "labels.csv" in files else None
    with pytest.raises(ConfigError, match=message):
        FastaDataModule(source=str(tmp_path / "s.fa"), labels=labels, val_fraction=0.2, test_fraction=0.2).ready()


def test_bad_sources_and_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FASTA source .* not found"):
        FastaDataModule(source=str(tmp_path / "missing.fa")).ready()
    write(tmp_path / "one" / "a.fa", ">x\nACGT\n")
    with pytest.raises(ConfigError, match="holds 1 FASTA file"):
        FastaDataModule(source=str(tmp_path / "one")).ready()
    source = write(tmp_path / "s.fa", fasta(made_up_records(6), header="{id}"))
    with pytest.raises(ConfigError, match=r"label table .*labels.csv not found"):
        FastaDataModule(source=source, labels=str(tmp_path / "labels.csv")).ready()
    with pytest.raises(ConfigError, match="needs a group around the label"):
        FastaDataModule(source=source, label_pattern="class=").ready()
    with pytest.raises(ConfigError, match="proteins have no other strand"):
        FastaDataModule(alphabet="protein", reverse_complement=0.5)
    with pytest.raises(ConfigError, match="more than 2,000,000"):
        KmerTokenizer("protein", 5)
    with pytest.raises(ConfigError, match="fewer than k=5"):
        FastaDataModule(source=write(tmp_path / "short.fa", fasta(made_up_records(20)) + ">s|x\nACG\n"), k=5).ready()


def test_the_built_in_oct4_mafk_data_is_split_by_chromosome() -> None:
    data = FastaDataModule(k=1).ready()
    assert data.classes == ["MafK", "Oct4"]  # type: ignore[attr-defined]
    sizes = {split: len(ids) for split, ids in data.ids.items()}  # type: ignore[attr-defined]
    assert sizes == {"train": 6823, "val": 456, "test": 718}
    chromosomes = {split: {i.split(":")[0] for i in ids} for split, ids in data.ids.items()}  # type: ignore[attr-defined]
    assert chromosomes["val"] == set(VAL_CHROMOSOMES) and chromosomes["test"] == set(TEST_CHROMOSOMES)
    assert not chromosomes["train"] & (set(VAL_CHROMOSOMES) | set(TEST_CHROMOSOMES))
    tokens, labels = data.splits["test"]  # type: ignore[attr-defined]
    assert {len(t) for t in tokens} == {200} and 0.45 < labels.float().mean() < 0.55
    pairs = labels[:16].view(8, 2)  # the classes in turn, though the files list one, then the other
    assert (pairs.sum(1) == 1).all()
    assert all(set(s) <= set("ACGTN") for s in data.sequences["train"])  # type: ignore[attr-defined]


@pytest.mark.slow  # 20 logistic regressions: about 30 s on 2 CPU cores
def test_the_kmer_reference_scores_the_datamodules_own_test_split(tmp_path: Path) -> None:
    from benchmarks.baselines import kmer_references

    source = write(tmp_path / "s.fa", fasta(made_up_records(600)))
    data = FastaDataModule(source=source, val_fraction=0.2, test_fraction=0.2).ready()
    rows = {name.split(" (")[0]: (metric, value, n) for name, metric, value, n in kmer_references(data)}  # type: ignore[arg-type]
    test_size = len(data.ids["test"])  # type: ignore[attr-defined]
    majority = rows.pop("majority class of the training split")
    assert majority[0] == "test/acc" and majority[2] == test_size and 0.3 < majority[1] < 0.7
    ((name, (metric, accuracy, n)),) = rows.items()
    assert name.startswith("logistic regression on") and name.endswith("-mer frequencies, both strands")
    assert metric == "test/acc" and n == test_size and accuracy > 0.85  # the planted 6-mer is a feature


def test_the_sequence_cnn_ignores_appended_padding_and_sees_a_motif_anywhere() -> None:
    torch.manual_seed(0)
    core = SequenceCNNClassifier(vocab_size=8, num_classes=3, pad_id=PAD_ID, channels=(8, 8, 8), kernel_size=5)
    core.eval()
    tokens = torch.randint(4, 8, (4, 13))
    tokens[1, 9:] = PAD_ID  # an odd real length: the pools' last window holds one real position
    padded = torch.cat([tokens, torch.full((4, 6), PAD_ID)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(core(padded), core(tokens), atol=1e-5, rtol=1e-4)
        alone = core(tokens[1:2, :9])  # the same sequence without any padding
    torch.testing.assert_close(alone, core(tokens)[1:2], atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="must be odd"):
        SequenceCNNClassifier(kernel_size=4)


@pytest.mark.slow  # about 30 s on 2 CPU cores
def test_a_users_fasta_trains_end_to_end_and_logs_sequences_with_predictions(in_tmp: Path) -> None:
    """The CNN preset on a user's file: the planted motif is learnt, and W&B's sample table shows the
    sequences (decoded from their tokens) with true and predicted class."""
    source = write(in_tmp / "promoters.fa", fasta(made_up_records(2000)))
    args = ["--config", "cnn_oct4_mafk", "--data.source", source, "--trainer.max_epochs=8"]
    forced = ["--run.logger=wandb", "--samples.num_samples=4", "--samples.max_overhead=1"]
    assert main([*args, "--data.val_fraction=0.15", "--data.test_fraction=0.15", *forced]) == 0
    (run_dir,) = (in_tmp / "runs" / "cnn_oct4_mafk").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.9  # a motif anywhere in 40 bp: found by the first layer's filters
    table = logged_tables(run_dir, "val/samples")[-1]
    assert table["columns"] == ["input", "true", "predicted", "confidence"]
    sequences = {sequence for _, sequence, _ in made_up_records(2000)}
    for shown, true, predicted, confidence in table["data"]:
        assert shown in sequences and true in ("background", "promoter") and predicted in ("background", "promoter")
        assert 0.5 <= confidence <= 1


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        ({"s.fa": ">a|x\nACGTJ\n"}, [], "'J' at position 5"),
        ({"s.fa": ">a\nACGT\n", "l.csv": "name,label\na,x\n"}, ["--data.labels", "l.csv"], "has no column id"),
        ({"s.fa": ">a|x\n>b|y\nACGT\n"}, [], "has no sequence"),
    ],
    ids=["unknown-nucleotide", "table-missing-column", "empty-record"],
)
def test_a_fasta_mistake_is_one_line_and_leaves_nothing(files, options, message, in_tmp: Path, capsys) -> None:
    for name, content in files.items():
        write(in_tmp / name, content)
    options = [str(in_tmp / value) if value.endswith(".csv") else value for value in options]
    code = main(["--config", "cnn_oct4_mafk", "--data.source", str(in_tmp / "s.fa"), *options])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (in_tmp / "runs").exists()
