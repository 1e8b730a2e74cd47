.PHONY: demo test lint bench
# Run the whole job locally on the emulator and print a summary.
demo:
	scripts/demo.sh
# Every test: unit, CLI, and integration on ministack and moto (installs what it needs).
test:
	scripts/test.sh
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
# The benchmark: scanfleet vs. the Python peer, and a scaling series (see docs/BENCHMARKS.md).
# Pass flags with ARGS, e.g. make bench ARGS="--rows 20000 --no-peer".
bench:
	scripts/bench.sh $(ARGS)
