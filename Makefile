.PHONY: test demo lint

test:
	bash scripts/test.sh

demo:
	python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/tally demo

lint:
	.venv/bin/ruff check src tests bench
