# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv test demo bench gpu-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest

demo: venv
	$(PY) -m contraseg demo

bench: venv
	$(PY) -m contraseg.bench losses

# On a CUDA machine: every GPU path checked, report in docs/gpu.md; exits non-zero on any
# mismatch or without a GPU. Runs from the checkout with the system's torch (no .venv):
# pip install torch torchvision timm numpy pillow pyyaml opencv-python-headless cityscapesscripts
gpu-check:
	PYTHONPATH=src $(PYTHON) -m contraseg.bench gpu

clean:
	rm -rf $(VENV) runs build *.egg-info
