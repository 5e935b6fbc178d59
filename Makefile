# The README's two set-up commands, each self-sufficient: `make run` and `make test`.
PYTHON ?= python

.PHONY: install run test quality

install:
	$(PYTHON) -m pip install --quiet -e '.[all,dev]'
	PYTHON=$(PYTHON) sh experiments/install_data.sh

run: install
	$(PYTHON) -m experiments.run

# The fast suite and the slow end-to-end runs (`pytest` alone runs only the fast one). Two test processes per
# CPU: the end-to-end tests spend much of their time waiting on the processes they start (runs, DDP ranks,
# SLURM jobs), which left half of a 2-core machine idle with one per CPU.
test: install
	$(PYTHON) -m pytest -m 'slow or not slow' -n $$(( 2 * $$(nproc) )) --durations=30

# How well the presets learn, trained in full (tens of minutes on 2 CPU cores), beside the references a
# practitioner fits first on the same splits; prints their figures and fails below a preset's bar.
quality: install
	$(PYTHON) -m benchmarks.quality
	$(PYTHON) -m benchmarks.baselines
