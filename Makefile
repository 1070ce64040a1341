# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
.PHONY: install demo test bench lint

install:
	bash .ci/install

demo: install
	.venv/bin/python -m integration.demo

test: install
	.venv/bin/ruff check .
	.venv/bin/pytest

# benchmarks are not tests: they print a figure beside its baseline, measured in the same run
bench: install
	.venv/bin/python benchmarks/engine_throughput.py

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
