"""Dynamic int8 quantisation (analysis/quantize.py), the int8 file of `python -m experiments.shrink`, and the
fp32-against-int8 benchmark (benchmarks/quantization.py)."""

from __future__ import annotations

import copy
import io
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.quantize import INT8_TYPES, int8_modules, int8_state_dict, load_int8_state_dict, quantize_dynamic_int8
from cores.contracts import ClassifierCore
from cores.recurrent import RNNClassifier
from cores.transformer import TransformerClassifier
from modules.classification import ClassificationTask
from tests.helpers import run_module

TINY_CORES: dict[str, Callable[[], ClassifierCore]] = {
    "bidirectional LSTM": lambda: RNNClassifier(vocab_size=300, embed_dim=32, hidden_dim=32, pooling="max"),
    "2-layer GRU": lambda: RNNClassifier(vocab_size=300, embed_dim=32, hidden_dim=32, num_layers=2, cell="gru"),
    "Transformer": lambda: TransformerClassifier(vocab_size=300, dim=32, num_layers=2, num_heads=4),
}
# int8 rounds each weight to 1/255 of its matrix's range and each activation to 1/255 of its batch's range:
# on these tiny cores (logits up to ~0.4) the logits move by up to ~0.015. The tolerance allows twice that.
ATOL, RTOL = 0.03, 0.05


def tokens(seed: int = 0) -> torch.Tensor:
    """(16, 12) token ids, padded (id 0) from different lengths on."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 300, (16, 12), generator=generator)
    for row, length in enumerate(torch.randint(1, 13, (16,), generator=generator).tolist()):
        ids[row, length:] = 0
    return ids


def serialized_bytes(state: object) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


@pytest.mark.parametrize("kind", list(TINY_CORES))
def test_int8_copy_is_close_to_fp32_smaller_quantized_and_leaves_the_original_as_it_was(kind: str) -> None:
    torch.manual_seed(0)
    net = TINY_CORES[kind]().eval()
    before = copy.deepcopy(net.state_dict())
    x = tokens()
    with torch.no_grad():
        expected = net(x)
        int8 = quantize_dynamic_int8(net)
        got = int8(x)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.9

    float_layers = [m for m in net.modules() if type(m) in (nn.Linear, nn.LSTM, nn.GRU)]
    quantized = int8_modules(int8)
    assert len(quantized) == len(float_layers) > 0
    assert not [m for m in int8.modules() if type(m) in (nn.Linear, nn.LSTM, nn.GRU)]  # every one swapped
    assert {type(m).__name__ for m in quantized.values()} == {type(m).__name__ for m in float_layers}
    assert all(isinstance(m, INT8_TYPES) for m in quantized.values())
    embeddings = [m for m in int8.modules() if isinstance(m, nn.Embedding)]
    assert embeddings and all(m.weight.dtype == torch.float32 for m in embeddings)  # embeddings stay fp32

    full, small = serialized_bytes(net.state_dict()), serialized_bytes(int8_state_dict(int8))
    assert small < full
    layer_part = sum(p.numel() for m in float_layers for p in m.parameters()) * 4  # bytes of their fp32 weights
    assert full - small > 0.6 * layer_part  # the layers' weights shrank to about a quarter

    # The original: the same types, the same weights, the same outputs.
    assert [type(m) for m in net.modules()] == [type(m) for m in TINY_CORES[kind]().modules()]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert torch.equal(net(x), expected)


def test_a_task_is_quantized_as_a_copy_that_answers_like_the_original() -> None:
    torch.manual_seed(0)
    task = ClassificationTask(TINY_CORES["bidirectional LSTM"](), num_classes=2, pad_id=0).eval()
    int8 = quantize_dynamic_int8(task)
    assert isinstance(int8, ClassificationTask) and int8 is not task
    assert int8_modules(int8.net) and not int8_modules(task.net)
    with torch.no_grad():
        torch.testing.assert_close(int8(tokens()), task(tokens()), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", list(TINY_CORES))
def test_int8_weights_load_weights_only_and_give_the_same_outputs(kind: str) -> None:
    torch.manual_seed(0)
    int8 = quantize_dynamic_int8(TINY_CORES[kind]().eval())
    buffer = io.BytesIO()
    torch.save({"state_dict": int8_state_dict(int8)}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["state_dict"]
    torch.manual_seed(1)  # other random weights, overwritten by the loaded ones
    fresh = quantize_dynamic_int8(TINY_CORES[kind]().eval())
    with torch.no_grad():
        assert not torch.equal(fresh(tokens()), int8(tokens()))
        load_int8_state_dict(fresh, state)
        assert torch.equal(fresh(tokens()), int8(tokens()))
    with pytest.raises(KeyError):
        load_int8_state_dict(fresh, {k: v for k, v in state.items() if not k.startswith("head.")})


def texts_csv(path: Path) -> Path:
    """240 short reviews whose words give away their label."""
    rng = random.Random(0)
    good, bad, filler = ["great", "moving", "superb", "fun"], ["dull", "awful", "tedious", "flat"], ["the", "film", "a"]
    rows = ["text,label"]
    for index in range(240):
        label = "fresh" if index % 2 else "rotten"
        words = rng.choices(filler, k=rng.randint(2, 8)) + rng.choices(good if label == "fresh" else bad, k=2)
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both sentiment presets, shrunk and on a tiny CSV, trained for 4 steps by `experiments.run` in this process."""
    from experiments.resume import forget_run_choice
    from experiments.run import main as run

    root = tmp_path_factory.mktemp("quantization")
    source = texts_csv(root / "reviews.csv")
    shrunk = {
        "lstm_sentiment": ["--model.net.embed_dim=16", "--model.net.hidden_dim=16"],
        "transformer_sentiment": ["--model.net.dim=16", "--model.net.num_heads=2", "--model.net.num_layers=1"],
    }
    runs = {}
    for preset, net in shrunk.items():
        forget_run_choice()  # each run chooses its own directory
        args = ["--config", preset, *net, f"--data.source={source}", "--data.vocab_size=50", "--data.batch_size=16"]
        args += ["--trainer.max_steps=4", "--trainer.precision=32-true"]  # tested in fp32, as the benchmark's fp32
        args += ["--run.logger=none", f"--run.root={root / 'runs'}"]
        assert run(args) == 0
        (runs[preset],) = (root / "runs" / preset).iterdir()
    forget_run_choice()
    return runs


def benchmark_rows(out: str) -> dict[str, dict[str, list[str]]]:
    """Per measured run (named by its experiment): its fp32, int8 and int8/fp32 rows, split into columns."""
    tables: dict[str, dict[str, list[str]]] = {}
    name = ""
    for line in out.splitlines():
        if match := re.match(r"^(\w+): (\S+) \(.+\); ([\d,]+) test examples; inputs batch", line):
            name = match[1]
            tables[name] = {}
        elif name and (match := re.match(r"^(fp32|int8|int8/fp32)\s+(.+)$", line)):
            tables[name][match[1]] = match[2].split()
    return tables


def check_table(out: str, presets: tuple[str, ...]) -> dict[str, dict[str, list[str]]]:
    assert re.match(r"CPU: .+, \d+ threads\n", out), out  # the machine: CPU model and threads
    header = re.search(
        r"^model\s+size MB\s+layers MB\s+batch 1T\s+batch (\d+)T\s+single 1T\s+single \1T\s+"
        r"test acc\s+change\s+changed$",
        out,
        re.M,
    )
    assert header, out
    tables = benchmark_rows(out)
    assert tuple(tables) == presets, out
    for rows in tables.values():
        assert set(rows) == {"fp32", "int8", "int8/fp32"}, out
        for name in ("fp32", "int8"):
            assert len(rows[name]) == 7, out  # size, layers, four latencies, accuracy
            assert all(float(value) > 0 for value in rows[name][:6]), out
            assert 0 <= float(rows[name][6]) <= 1, out
        ratio = rows["int8/fp32"]
        assert len(ratio) == 9 and all(value.startswith("x") for value in ratio[:6]) and ratio[7] == "pt", out
        assert float(ratio[0][1:]) < 1 and float(ratio[1][1:]) < 1, out  # smaller
        change = float(ratio[6]) / 100
        # The accuracies are printed to 4 places (their difference off by up to 1e-4) and the change, computed
        # from the unrounded ones, to 0.01 pt (off by up to 0.5e-4).
        assert change == pytest.approx(float(rows["int8"][6]) - float(rows["fp32"][6]), abs=1.5e-4 + 1e-9), out
        assert re.fullmatch(r"\d+/\d+", ratio[8]), out
    return tables


def test_benchmark_measures_given_runs_and_prints_every_column(
    tiny_runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.quantization import main

    args = ["--runs", *map(str, tiny_runs.values()), "--repeats", "2", "--warmup", "1"]
    monkeypatch.setattr(sys, "argv", ["benchmarks.quantization", *args])
    main()
    tables = check_table(capsys.readouterr().out, tuple(tiny_runs))
    for preset, run in tiny_runs.items():  # the test split rebuilt from the checkpoint is the run's own
        summary = json.loads((run / "summary.json").read_text())
        assert float(tables[preset]["fp32"][6]) == pytest.approx(summary["test/acc"], abs=1e-4)


def test_benchmark_refuses_a_run_that_does_not_classify_in_one_line(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.quantization import main
    from experiments.run import main as run

    assert run(["--config", "lstm_sunspots", "--trainer.max_steps=2", "--run.test=false", "--run.logger=none"]) == 0
    (forecaster,) = (in_tmp / "runs" / "lstm_sunspots").iterdir()
    monkeypatch.setattr(sys, "argv", ["benchmarks.quantization", "--runs", str(forecaster)])
    with pytest.raises(SystemExit) as stop:
        main()
    assert (
        str(stop.value.code)
        == f"error: {forecaster} is not a classification run; this benchmark measures test accuracy"
    )


def test_shrink_writes_an_int8_model_that_loads_weights_only_and_answers_as_the_int8_copy(
    tiny_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.shrink import load_int8, main
    from experiments.trained import load_trained

    run = tiny_runs["lstm_sentiment"]
    assert main([str(run)]) == 0
    assert re.match(
        rf"wrote {re.escape(str(run / 'model-int8.pt'))}: [\d.]+ MB, 2 Linear/LSTM/GRU", capsys.readouterr().out
    )
    saved = torch.load(run / "model-int8.pt", weights_only=True)
    assert saved["int8_layers"] == ["encoder.rnn", "head.1"]
    shrunk, trained = load_int8(run / "model-int8.pt"), load_trained(str(run))
    inputs = shrunk.datamodule.encode_inputs(["a superb moving film", "the dull flat film"])
    with torch.no_grad():
        assert torch.equal(shrunk.task(inputs), quantize_dynamic_int8(trained.task)(inputs))
    answers = shrunk.task.predictions(inputs, shrunk.datamodule)
    assert [answer["prediction"] in ("fresh", "rotten") for answer in answers] == [True, True]

    assert main([str(run)]) == 2  # the output exists: one line, nothing replaced
    assert capsys.readouterr().err == (
        f"error: {run / 'model-int8.pt'}: exists; give another path with --output, or --overwrite to replace it\n"
    )
    assert main([str(run), "--output", str(run / "other.pt")]) == 0


def test_shrink_stops_with_one_line_for_a_run_without_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.shrink import main

    run = tmp_path / "runs" / "lstm_sentiment" / "20261130-101010-abcdef"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed_everything: 0\n")
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: run {run} has no checkpoint; train it to the end, or resume it, before using it\n"
    assert not (run / "model-int8.pt").exists()


@pytest.mark.slow
def test_benchmark_trains_both_presets_and_measures_them(tmp_path: Path) -> None:
    """The command as documented, at a tiny size: both presets trained for 2 steps each (on Rotten Tomatoes)."""
    done = run_module("benchmarks.quantization", "--max_steps", "2", "--repeats", "2", "--warmup", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = check_table(done.stdout, ("lstm_sentiment", "transformer_sentiment"))
    assert done.stdout.count("; 1,373 test examples; ") == 2, done.stdout  # the presets' split by movie
    for preset, rows in tables.items():
        assert float(rows["int8/fp32"][1][1:]) < 0.3, done.stdout  # the layers' weights: a quarter, and a little
        (run,) = (tmp_path / "runs" / preset).iterdir()
        summary = json.loads((run / "summary.json").read_text())
        # The run tested in its preset's precision (bf16-mixed where the CPU has it): a few answers may differ.
        assert float(rows["fp32"][6]) == pytest.approx(summary["test/acc"], abs=0.005)
        assert re.search(rf"^trained {preset} in \d+ s: ", done.stdout, re.M)
