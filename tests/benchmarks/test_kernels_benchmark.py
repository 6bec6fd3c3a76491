"""benchmarks/kernels.py runs (on the CPU: the kernel in Triton's interpreter, tiny sizes)."""

from __future__ import annotations

import runpy
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


def test_kernel_benchmark_reports_every_case():
    main = runpy.run_path(str(BENCH))["main"]
    rows = main(["--lengths", "3", "--batch", "1", "--heads", "1", "--dim", "4", "--dtypes", "fp32", "--repeats", "1",
                 "--device", "cpu"])
    assert [(r["T"], r["pass"]) for r in rows] == [(3, "fwd"), (3, "fwd+bwd")]
    assert all(r["triton_s"] > 0 and r["naive_s"] > 0 and r["speedup"] > 0 for r in rows)
