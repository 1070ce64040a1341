# Two commands on a fresh machine: `make demo` and `make test`. Both install first.
.PHONY: reference install demo test bench bench-engine bench-scale bench-mass bench-policy bench-limits bench-experiment bench-e2e bench-milter bench-milter-stop bench-cli-start bench-feedback bench-freeze bench-restart bench-fleet bench-replay bench-footprint lint

install:
	bash .ci/install

demo: install
	.venv/bin/python -m integration.demo

# three workers (pytest-xdist) on two cores: tests wait on mail, daemons and rate windows,
# and with two a quarter of the CPU sat idle. One test at a time to each (--maxschedchunk 1),
# the longest first (conftest.py). Each test has its own ports, folders and processes
test: install
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	# the install compiles (setup.py): the suite tests the compiled modules, as shipped
	SB_REQUIRE_COMPILED=1 .venv/bin/pytest -n 3 --maxschedchunk 1 --durations=20

# benchmarks are not tests (CI does not run them): each prints its figure beside a
# baseline measured in the same run. Results and commands: BENCHMARKS.md
bench: bench-engine bench-scale bench-mass bench-policy bench-limits bench-experiment bench-e2e bench-milter bench-milter-stop bench-cli-start bench-feedback bench-freeze bench-restart bench-fleet bench-replay bench-footprint

bench-engine: install
	.venv/bin/python benchmarks/engine_throughput.py

bench-scale: install
	.venv/bin/python benchmarks/decision_scale.py

bench-mass: install
	.venv/bin/python benchmarks/mass_changes.py

# policyd-rate-limit, the comparison daemon, lives in its own venv
.bench-venv/bin/policyd-rate-limit:
	python3 -m venv .bench-venv
	.bench-venv/bin/pip install -q policyd-rate-limit==1.2.0

bench-policy: install .bench-venv/bin/policyd-rate-limit
	.venv/bin/python benchmarks/policy_throughput.py

# per-provider caps, rate caps and adaptive factors in force, against the same daemon
# without them, interleaved over 5 rounds (issue #18's target: within 10%)
bench-limits: install
	.venv/bin/python benchmarks/policy_throughput.py --levels 1,10 --seconds 6 --rounds 5 --compare-limits --prl-python none

# an A/B experiment running on the one rule, against the same daemon without it
bench-experiment: install
	.venv/bin/python benchmarks/policy_throughput.py --levels 1,10 --seconds 6 --rounds 5 --compare-experiment --prl-python none

bench-freeze: install
	.venv/bin/python benchmarks/freeze.py

# policyd restarted every 5 s under load, with and without socket activation
bench-restart: install
	.venv/bin/python benchmarks/restart.py

bench-e2e: install
	.venv/bin/python benchmarks/postfix_e2e.py --variants plain,policyd-dunno,policyd-filter,policyd-dunno-protocol,policyd,policyd-shadow --keep-running --rounds 20 --messages 2000 --settle 1

bench-footprint: install
	.venv/bin/python benchmarks/request_footprint.py

bench-milter: install
	.venv/bin/python benchmarks/postfix_e2e.py --variants plain,milter-noop,milter-unix,milter-inet

bench-milter-stop: install
	.venv/bin/python benchmarks/milter_stop.py

bench-cli-start: install
	.venv/bin/python benchmarks/cli_start.py

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

bench-feedback: install
	.venv/bin/python benchmarks/feedback_throughput.py
	.venv/bin/python benchmarks/feedback_throughput.py --format exim
	.venv/bin/python benchmarks/feedback_throughput.py --tenants
	.venv/bin/python benchmarks/feedback_throughput.py --format exim --tenants
	.venv/bin/python benchmarks/feedback_throughput.py --experiment

# the reference pages' generated tables (docs/reference/), from the code
reference: install
	.venv/bin/python tools/reference.py

# N deciders on one Redis (local and script mode): Redis CPU and memory per decision
bench-replay: install
	.venv/bin/python benchmarks/replay.py --messages 1000000

bench-fleet: install
	.venv/bin/python benchmarks/fleet.py
