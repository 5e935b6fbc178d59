"""Property: whatever arguments it is given, the command parses them or refuses them in one line (exit 2);
it never crashes with a traceback."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.run import main

KEYS = [
    "--config",
    "--model",
    "--model.lr",
    "--model.init_args.lr",
    "--model.optimizer",
    "--model.net",
    "--model.net.dropout",
    "--model.net.channels",
    "--model.net.depths",
    "--model.init_args.net.init_args.hidden_dim",
    "--model.dropout",  # a core setting in the earlier layout: a one-line hint
    "--data",
    "--data.dataset",
    "--data.batch_size",
    "--data.val_fraction",
    "--data.data_dir",
    "--trainer.max_epochs",
    "--trainer.precision",
    "--trainer.devices",
    "--trainer.callbacks+",
    "--checkpoint.monitor",
    "--run.logger",
    "--run.resume",
    "--run.tags",
    "--seed_everything",
    "--no.such.option",
    "-c",
]
SPECIAL = [
    "[1, 2]",
    "[]",
    "{",
    "}",
    "null",
    "true",
    "cnn_digits",
    "lstm_sentiment",
    "cores.cnn.CNNClassifier",
    "cores.recurrent.RNNClassifier",
    "modules.image_classifier.ImageClassifier",  # a class of the earlier layout
    "-1",
    "0",
    "1e309",
    "nan",
    "=",
    "--",
]
VALUES = st.one_of(
    st.text(max_size=10),
    st.integers(-(10**6), 10**6).map(str),
    st.floats().map(str),
    st.sampled_from(SPECIAL),
)
OPTION = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(list),  # --key value
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: [f"{kv[0]}={kv[1]}"]),  # --key=value
    VALUES.map(lambda value: [value]),  # a stray word
)
ARGUMENTS = st.lists(OPTION, max_size=4).map(lambda options: [arg for option in options for arg in option])


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=ARGUMENTS)
def test_any_arguments_parse_or_exit_2_in_one_line(arguments: list[str], tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([*arguments, "--print_config"])  # stop after parsing: print the config, train nothing
        except SystemExit as exit_:
            code = exit_.code
    message = err.getvalue()
    assert code in (0, 2), (arguments, code, message)
    assert "Traceback" not in message, (arguments, message)
    if code == 2:
        errors = [line for line in message.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, (arguments, message)
