"""Pure helpers of the benchmark scripts (benchmarks/*.py): arithmetic, tables, parsing, comparisons.

The scripts' --quick modes take minutes on a shared 2-core machine, so they are not run here;
nothing below times anything or asserts on a timing.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_common as bc  # noqa: E402
import conv2p1d  # noqa: E402
import end_to_end  # noqa: E402
import samplers  # noqa: E402
import throughput  # noqa: E402


# ----------------------------------------------------------------------------- arithmetic
def test_matmul_flops_is_two_n_cubed():
    # an (n x k) @ (k x m) product has n*m outputs, each k multiplies and k adds: 2*n*m*k
    assert bc.matmul_flops(4) == 2 * 4**3 == 128
    assert bc.matmul_flops(2, 3, 5) == 60


def test_gflops_per_s():
    # 2 * 1000^3 FLOPs in 0.5 s = 4e9 FLOP/s = 4 GFLOP/s
    assert bc.gflops_per_s(bc.matmul_flops(1000), 0.5) == pytest.approx(4.0)
    assert math.isnan(bc.gflops_per_s(1e9, 0.0))


def test_ratio_handles_zero_and_nan():
    assert bc.ratio(3, 2) == 1.5
    assert math.isnan(bc.ratio(1, 0))
    assert math.isnan(bc.ratio(float("nan"), 1))
    assert math.isnan(bc.ratio(None, 1))


def test_summarize_median_min_max():
    s = bc.summarize([3.0, 1.0, 2.0])
    assert (s["median_s"], s["min_s"], s["max_s"], s["repeats"]) == (2.0, 1.0, 3.0, 3)
    assert math.isnan(bc.summarize([])["median_s"])


def test_time_calls_counts_calls_and_respects_budget():
    calls = []
    times = bc.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(times) == 3 and len(calls) == 5  # 2 untimed warm-ups + 3 timed
    calls.clear()
    times = bc.time_calls(lambda: calls.append(1), repeats=10, warmup=0, budget_s=0.0)
    assert len(times) == 1  # the budget is spent after the first repeat, which is always kept


# ----------------------------------------------------------------------------- tables, load, JSON
def test_format_table_aligns_and_marks_missing():
    text = bc.format_table([{"name": "a", "x": 1.23456, "n": 10}, {"name": "bbb", "x": float("nan")}],
                           ["name", "x", "n"], title="T")
    lines = text.splitlines()
    assert lines[0] == "T"
    assert lines[1].split() == ["name", "x", "n"]
    assert lines[3].split() == ["a", "1.23", "10"]
    assert lines[4].split() == ["bbb", "-", "-"]  # NaN and a missing key print as "-"
    assert len({len(lines[2])}) == 1 and set(lines[2]) <= {"-", " "}


def test_format_table_large_numbers_are_whole():
    assert bc.format_table([{"v": 1234.5678}]).splitlines()[-1].strip() == "1235"


def test_load_warning_threshold():
    assert bc.load_warning(1.5) is None
    assert bc.load_warning(float("nan")) is None
    assert "load average 3.20" in bc.load_warning(3.2)


def test_write_json_turns_nan_into_null(tmp_path):
    import json

    path = bc.write_json(tmp_path / "sub" / "x.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": (1, 2)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": [1, 2]}


def test_cpu_info_flags_are_known_names():
    info = bc.cpu_info()
    assert set(info["flags"]) <= {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile",
                                  "avx_vnni"}
    assert isinstance(info["native_bf16"], bool)


# ----------------------------------------------------------------------------- throughput
def test_study_config_reads_profiles():
    b = throughput.study_config("prostate", "full")
    assert (b["spatial_dims"], b["features"], b["size"], b["batch"]) == (2, (64, 128, 256, 512), 384, 1)
    a = throughput.study_config("stroke", "quick")
    assert a["size"] == 24 and a["in_channels"] == 2  # the larger of the quick grid's data.size values


def test_step_flops_of_a_single_conv_layer_net_is_positive_and_scales_with_batch():
    cfg = dict(throughput.tiny_config(throughput.study_config("brain", "quick")), batch=1)
    one = throughput.step_flops(cfg)
    two = throughput.step_flops(dict(cfg, batch=2))
    assert one > 0 and two == 2 * one  # every counted op is linear in the batch


def test_recommend_ignores_modes_with_wrong_loss(monkeypatch):
    rows = [{"study": "B", "size": "q", "mode": "fp32", "step_s": 2.0, "loss_rel_diff": 0.0},
            {"study": "B", "size": "q", "mode": "bf16", "step_s": 1.0, "loss_rel_diff": 0.2},  # wrong: excluded
            {"study": "B", "size": "q", "mode": "channels_last", "step_s": 1.6, "loss_rel_diff": 0.0}]
    monkeypatch.setattr(throughput, "auto_mode", lambda dims: "fp32")
    rec = throughput.recommend(rows)
    assert rec["per_model"] == [{"study": "B", "size": "q", "fastest": "channels_last", "speedup_vs_fp32": 1.25,
                                 "auto": "fp32", "auto_vs_fastest": 1.25, "auto_is_fastest": "no (1.25x slower)"}]
    assert rec["wins"]["channels_last"] == 1 and rec["wins"]["bf16"] == 0
    monkeypatch.setattr(throughput, "auto_mode", lambda dims: "bf16")  # auto's own mode gave a wrong loss
    assert throughput.recommend(rows)["per_model"][0]["auto_is_fastest"].startswith("no: not measured")
    assert throughput.auto_mode(2) in throughput.MODES and throughput.auto_mode(3) in throughput.MODES


# ----------------------------------------------------------------------------- conv2p1d
def _row(mode, fmt, t, mb, saved=10.0):
    return {"mode": mode, "conv": mode.split()[0], "size": 64, "features": "16-32", "precision": "fp32",
            "memory_format": fmt, "time_per_step_s": t, "peak_mem_mb": mb, "saved_mb": saved}


def test_compare_takes_each_mode_at_its_best_layout():
    rows = [_row("3d", "channels_last_3d", 1.2, 100), _row("3d", "contiguous", 1.0, 90, 20.0),
            _row("2+1d stored", "channels_last_3d", 0.5, 80, 30.0), _row("2+1d stored", "contiguous", 0.9, 70),
            _row("2+1d recomputed", "contiguous", 0.8, 60, 15.0)]
    stored, recomputed = conv2p1d.compare(rows)
    assert (stored["3d_layout"], stored["2+1d_layout"]) == ("contiguous", "channels_last_3d")
    assert stored["speedup"] == pytest.approx(2.0) and stored["mem_ratio"] == pytest.approx(80 / 90)
    assert stored["saved_ratio"] == pytest.approx(1.5) and stored["goal_met"]
    assert recomputed["2+1d mode"] == "recomputed" and recomputed["speedup"] == pytest.approx(1.25)
    assert recomputed["saved_ratio"] == pytest.approx(0.75) and not recomputed["goal_met"]  # < 1.5x


def test_compare_goal_needs_speed_and_memory():
    rows = [_row("3d", "contiguous", 1.0, 50), _row("2+1d stored", "contiguous", 0.5, 60)]
    (c,) = conv2p1d.compare(rows)
    assert c["speedup"] == pytest.approx(2.0) and not c["goal_met"]  # faster but more memory


def test_saved_for_backward_counts_what_each_mode_keeps():
    """The exact activation accounting of the benchmark: (2+1)D storing its inner maps keeps more than 3D,
    recomputing them keeps less than storing, and measuring leaves the model's statistics as they were."""
    from seglib.nn.unet import build_model
    from seglib.studies.stroke.step import saved_for_backward_mb

    torch.manual_seed(0)
    x, y = torch.randn(1, 2, 16, 16, 16), (torch.rand(1, 1, 16, 16, 16) > 0.9).float()
    saved = {}
    for conv, rc in (("3d", None), ("2+1d", "off"), ("2+1d", "on")):
        m = build_model("unet", spatial_dims=3, in_channels=2, out_channels=1, features=(4, 8, 16),
                        upsample="linear", conv=conv, **({"recompute": rc} if rc else {})).train()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        saved[conv, rc] = saved_for_backward_mb(m, x, y, torch.device("cpu"), "fp32")
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert saved["2+1d", "off"] > 1.3 * saved["3d", None]
    assert saved["2+1d", "on"] < 0.8 * saved["2+1d", "off"]


def test_breakdown_sorts_operators_into_parts_of_the_step():
    prof = [{"conv": "3d", "op": "aten::convolution_backward", "self_ms": 60.0},
            {"conv": "3d", "op": "aten::mkldnn_convolution", "self_ms": 30.0},
            {"conv": "3d", "op": "aten::native_batch_norm", "self_ms": 10.0},
            {"conv": "2+1d", "op": "aten::convolution_backward", "self_ms": 30.0},
            {"conv": "2+1d", "op": "aten::native_batch_norm", "self_ms": 20.0},
            {"conv": "2+1d", "op": "aten::copy_", "self_ms": 5.0},
            {"conv": "2+1d", "op": "aten::something_else", "self_ms": 5.0}]
    rows = {r["part"]: r for r in conv2p1d.breakdown(prof)}
    assert rows["convolution"]["3d_ms"] == 90.0 and rows["convolution"]["speedup"] == pytest.approx(3.0)
    assert rows["batch norm + ReLU"]["speedup"] == pytest.approx(0.5)
    assert rows["layout copies"]["3d_ms"] == 0.0 and rows["other"]["2+1d_ms"] == 5.0
    assert rows["whole step"]["3d_ms"] == 100.0 and rows["whole step"]["speedup"] == pytest.approx(100 / 60)


# ----------------------------------------------------------------------------- samplers
def test_run_sampler_on_a_cube_lesion():
    # a 4^3 lesion in a 16^3 volume with 8^3 patches: every accepted patch holds >= 40 % of it
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[6:10, 6:10, 6:10] = 1
    rows = [dict(source="s", **samplers.run_sampler([("c", mask)], 8, s, 0.4, 5, 500))
            for s in ("rejection", "lesion_aware")]
    assert all(r["requested"] == 5 and r["acceptance_rate"] == 1.0 for r in rows)
    assert all(r["lesion_fraction"] >= 0.4 for r in rows)
    # exact 1/p: the corners whose patch holds >= 0.4 of the lesion over all 9^3 corners
    from seglib.data.sampling import PatchIndex

    p = PatchIndex(mask, 8).acceptance_probability(0.4)
    assert rows[0]["exact_draws"] == pytest.approx(1 / p)
    (red,) = samplers.reductions(rows)
    assert red["reduction"] == pytest.approx(rows[0]["draws_per_accepted"] / rows[1]["draws_per_accepted"])
    assert red["goal_100x"] in ("met", "NOT met")


# ----------------------------------------------------------------------------- end to end
def test_parse_report_output():
    text = ("stroke: executed in 245 s\nprostate: executed notebook is up to date (profile smoke)\n"
            "renderer: fallback\nreport built in 532 s\nsite: /x/_site/index.html\n")
    out = end_to_end.parse_output(text)
    assert out == {"executed_s": {"stroke": 245.0}, "up_to_date": ["prostate"], "report_built_s": 532.0,
                   "renderer": "fallback"}


def test_steal_seconds_reads_the_cpu_line(tmp_path):
    import os

    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    stat.write_text(f"cpu  100 0 50 900 3 0 1 {7 * hz} 0 0\ncpu0 50 0 25 450 1 0 0 0 0 0\n")
    assert end_to_end.steal_seconds(stat) == pytest.approx(7.0)
    stat.write_text("intr 1 2 3\n")
    assert end_to_end.steal_seconds(stat) is None
    assert end_to_end.steal_seconds(tmp_path / "missing") is None


def test_safe_to_empty_only_bench_folders_under_build(tmp_path):
    assert end_to_end.safe_to_empty(bc.REPO / "build" / "bench_e2e")
    assert not end_to_end.safe_to_empty(bc.REPO / "build")
    assert not end_to_end.safe_to_empty(bc.REPO / "build" / "runs")
    assert not end_to_end.safe_to_empty(tmp_path / "bench_x")


def test_shadow_root_links_params_and_notebooks(tmp_path):
    root = end_to_end.shadow_root(tmp_path)
    assert (root / "params").is_symlink() and (root / "params").resolve() == (bc.REPO / "params").resolve()
    assert (root / "notebooks").is_symlink()
    end_to_end.shadow_root(tmp_path)  # idempotent


def test_gpu_check_grids_schedule_and_no_cuda_exit():
    import subprocess
    import sys

    import gpu

    cells = {s: gpu.full_cells(s) for s in gpu.STUDIES}
    assert [len(cells[s]) for s in gpu.STUDIES] == [36, 24, 30]  # 12 x 3, 8 x 3, 10 x 3 seeds
    assert sorted({gpu.model_key(c) for c in cells["stroke"]}) == [
        ("unet", "2+1d", 64), ("unet", "2+1d", 128), ("unet", "3d", 64), ("unet", "3d", 128)]
    # longest first, one run per GPU at a time: {3, 2} and {3, 2, 1} on two GPUs
    assert gpu.schedule([3, 3, 2, 2, 1], 2) == 6 and gpu.schedule([4, 1, 1], 3) == 4
    import torch

    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(gpu.bc.REPO / "benchmarks" / "gpu.py")], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "no CUDA device" in proc.stdout


def test_notebook_breakdown_sums_cells_and_runs(tmp_path):
    """end_to_end's per-notebook table: papermill's cell durations and the runs' wall time split into
    epochs' training, validation and the rest, from files laid out as a build folder holds them."""
    import json

    (tmp_path / "executed").mkdir()
    cells = [{"cell_type": "code", "source": ["grid = session.run()\n"], "metadata": {"papermill": {"duration": 7.5}}},
             {"cell_type": "code", "source": "x = 1", "metadata": {"papermill": {"duration": 0.5}}},
             {"cell_type": "markdown", "source": "text", "metadata": {}}]
    (tmp_path / "executed" / "brain.ipynb").write_text(json.dumps({"cells": cells}))
    run = tmp_path / "runs" / "brain" / "k1"
    run.mkdir(parents=True)
    (run / "provenance.json").write_text(json.dumps({"started": "2026-01-01T00:00:00+00:00",
                                                     "ended": "2026-01-01T00:00:06+00:00"}))
    (run / "history.csv").write_text("epoch,train_time_s,epoch_time_s\n1,2.0,2.5\n2,2.0,2.5\n")
    (row,) = end_to_end.notebook_breakdown(tmp_path)
    assert row["notebook"] == "brain" and row["cells_s"] == pytest.approx(8.0) and row["runs"] == 1
    assert (row["runs_wall_s"], row["epochs_train_s"], row["epochs_val_s"]) == (6.0, 4.0, 1.0)
    assert row["runs_rest_s"] == pytest.approx(1.0) and row["longest cells"].startswith("grid = session.run() 7.5 s")


def test_missed_reason_gives_the_cpu_floor_and_the_epochs_share():
    cold = {"wall_s": 337.0, "cpu_s": 630.0}
    notebooks = [{"cells_s": 600.0, "epochs_train_s": 400.0, "epochs_val_s": 80.0},
                 {"cells_s": 300.0, "epochs_train_s": 220.0, "epochs_val_s": 60.0}]
    text = end_to_end.missed_reason(cold, notebooks, cores=2)
    assert "630 CPU s, at least 315 s on 2 cores" in text and "(93% of the 2 cores' time" in text
    assert "were 84% of the notebooks' 900 cell-seconds (training 620 s, per-epoch validation 140 s)" in text
    assert "nan" not in end_to_end.missed_reason(cold, notebooks, cores=4)


def test_conv2p1d_layouts_per_precision():
    assert conv2p1d.layouts_for(None, "fp32") == conv2p1d.LAYOUTS
    spec = ["bf16=channels_last_3d", "fp32=contiguous"]
    assert conv2p1d.layouts_for(spec, "bf16") == ("channels_last_3d",)
    assert conv2p1d.layouts_for(spec, "fp32") == ("contiguous",)
    assert conv2p1d.layouts_for(["contiguous"], "bf16") == ("contiguous",)
    with pytest.raises(SystemExit, match="--layouts sideways"):
        conv2p1d.layouts_for(["sideways"], "fp32")


@pytest.mark.parametrize("only", ["5", "0,x", ","])
def test_lgg_cv_refuses_folds_the_split_does_not_have(only, tmp_path, capsys):
    import lgg_cv

    assert lgg_cv.main(["--data-dir", str(tmp_path), "--only", only]) == 2
    assert f"--only {only}: expected folds among 0-4" in capsys.readouterr().out


def test_lgg_cv_cross_validates_the_validated_cells_of_a_refit_profile(tmp_path, monkeypatch, capsys):
    """The CPU recipe's grid sweeps data.refit; the cross-validation trains each fold's validated run alone (a
    refit run has no held-out patients) and scores every patient once."""
    import lgg_cv

    from seglib.data.phantoms import write_dataset

    monkeypatch.setenv("SEGLIB_BUILD", str(tmp_path / "build"))
    root = write_dataset("lgg", tmp_path / "kaggle_3m", 6, shape=(32, 32, 8), seed=0)
    small = ["data.size=32", "data.samples_per_epoch=16", "train.epochs=2", "optim.warmup_epochs=1", "train.batch_size=8",
             "model.features=[4, 8, 16, 32, 64]"]
    assert lgg_cv.main(["--data-dir", str(root), "--folds", "2", *[a for p in small for a in ("-p", p)]]) == 0
    out = capsys.readouterr().out
    assert "6 patients, 2 folds" in out
    runs = [d for d in (tmp_path / "build" / "runs" / "brain").iterdir() if d.is_dir()]
    configs = [json.loads((d / "config.json").read_text())["config"]["data"] for d in runs]
    assert sorted(c["fold"] for c in configs) == [0, 1] and not any(c["refit"] for c in configs)
    result = json.loads((tmp_path / "build" / "benchmarks" / "lgg_cv.json").read_text())
    cases = {r["case_id"] for r in result["per_case"]}
    assert len(cases) == 6
