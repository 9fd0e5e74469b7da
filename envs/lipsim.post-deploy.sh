#!/usr/bin/env bash
# Run by snakemake inside the new conda env (after it copied lipsim.yaml alone): install the
# lipsim package from the checkout that runs the workflow. workflow/rules/common.smk exports
# LIPSIM_SOURCE (absolute path of the repository); the pins came with lipsim.yaml.
set -euo pipefail
: "${LIPSIM_SOURCE:?LIPSIM_SOURCE is not set (workflow/rules/common.smk sets it)}"
python -m pip install --no-deps --no-build-isolation -e "$LIPSIM_SOURCE"
