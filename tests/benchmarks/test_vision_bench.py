"""benchmarks/vision.py runs in its smallest form and writes every figure (the numbers are not asserted,
only that both loops trained and were timed): on the CPU, and on CUDA at bf16 channels-last."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "vision.py"
SMALLEST = ["--steps", "2", "--repeats", "1", "--samples", "64", "--nf", "4"]


def run(tmp_path: Path, *args: str) -> tuple[dict, list[dict]]:
    main = runpy.run_path(str(BENCH))["main"]
    out = main([*SMALLEST, *args, "--json", str(tmp_path / "vision.json")])
    details = json.loads((tmp_path / "vision.details.json").read_text())
    figures = json.loads((tmp_path / "vision.json").read_text())
    assert details["ratio"] == out["ratio"]
    return details, figures


def check(details: dict, figures: list[dict]) -> None:
    for loop in ("plain", "clframe"):
        r = details[loop]
        assert r["samples_per_s"] > 0 and r["images_per_s"] > 0 and r["fit_samples_per_s"] > 0
        assert r["samples_per_repetition"] == 5 * 32  # 2 steps rounded up to one per experience, batch 32
    assert details["ratio"] > 0 and details["fit_ratio"] > 0
    assert details["memory"]["uint8_image_bytes"] == (10 * 64 + 10 * 12) * 3 * 32 * 32
    assert details["memory"]["float32_image_bytes"] == 4 * details["memory"]["uint8_image_bytes"]
    # the house format, for benchmarks/bench_all.py: one ratio against its target
    assert [f["unit"] for f in figures] == ["x"] and figures[0]["value"] == details["ratio"]


def test_the_vision_benchmark_times_both_loops_on_the_cpu(tmp_path):
    details, figures = run(tmp_path)
    check(details, figures)
    assert details["settings"]["device"] == "cpu" and "peak_allocated_bytes" not in details["plain"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_vision_benchmark_runs_on_cuda_in_bf16_channels_last(tmp_path):
    details, figures = run(tmp_path, "--device", "cuda", "--precision", "bf16-mixed", "--channels-last")
    check(details, figures)
    assert details["versions"]["device_name"] == torch.cuda.get_device_name()
    assert all(details[loop]["peak_allocated_bytes"] > 0 for loop in ("plain", "clframe"))
