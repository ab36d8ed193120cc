"""Benchmarks (scripts, not tests): ``python -m bench.inference``, ``python -m bench.train``,
``python -m bench.input``. Each prints a markdown table and writes bench/results/<name>.json
with the machine, versions, date, load average and every figure."""
