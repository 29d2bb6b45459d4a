"""Simulated vendor apps on loopback: stateful fakes of vendor APIs for the quickstart `sandbox`
command, end-to-end tests and benchmarks. Each simulator is an ASGI app kept faithful to the
vendor contracts in the shared specs folder; `_common.serve()` runs one on loopback."""
