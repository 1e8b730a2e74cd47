.PHONY: demo test lint
# Run the whole job locally on the emulator and print a summary.
demo:
	scripts/demo.sh
# Every test: unit, CLI, and integration on ministack and moto (installs what it needs).
test:
	scripts/test.sh
lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
