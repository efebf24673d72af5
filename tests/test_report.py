"""The plan report: every figure drawn or explained, the HTML self-contained, the CLI's errors."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sized_mpl_truth
from factories import tiny_plan

from scaleplan.planner.cli import main
from scaleplan.planner.report import build_report, draw_figures, write_report
from scaleplan.planner.report.figures import ReportFigure
from scaleplan.specs.plan import Plan

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEYS = [
    "1_scaling_law",
    "2_loss_forecast",
    "3_layout_search",
    "4_memory",
    "5_pipeline_timeline",
    "6_phases",
]


def with_law(plan: Plan, **law: object) -> Plan:
    return plan.model_copy(update={"law": law or {"preset": "chinchilla"}})


def by_key(figures: list[ReportFigure] | tuple[ReportFigure, ...]) -> dict[str, ReportFigure]:
    return {f.key: f for f in figures}


def one(plan: Plan, key: str, fit_path: str | None = None) -> ReportFigure:
    """Draw only figure `key` (strict: an unexpected error fails the test)."""
    (fig,) = draw_figures(plan, fit_path=fit_path, strict=True, keys={key})
    return fig


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def assert_non_trivial_png(data: bytes) -> None:
    """A real plot: a sensible size and more than a handful of distinct colours."""
    import io

    from matplotlib.image import imread

    w, h = png_size(data)
    assert 400 <= w <= 2000 and 200 <= h <= 2000
    pixels = imread(io.BytesIO(data), format="png")[..., :3].reshape(-1, 3)
    assert len(np.unique((pixels * 255).astype(np.uint8), axis=0)) > 20
    assert pixels.std() > 0.05


def test_tiny_plan_report_is_self_contained(tmp_path: Path) -> None:
    plan = with_law(tiny_plan(pp=2))
    result = build_report(plan, tmp_path / "out", strict=True)
    assert result.html_path == tmp_path / "out" / "report.html"
    page = result.html_path.read_text()
    figures = by_key(result.figures)
    assert list(figures) == KEYS
    assert figures["1_scaling_law"].status == "ok"
    assert figures["6_phases"].status == "ok"
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ok = [f for f in result.figures if f.status == "ok"]
    assert len(embedded) == len(ok)
    for fig, b64 in zip(ok, embedded, strict=True):
        data = base64.b64decode(b64)
        assert (
            data == (tmp_path / "out" / fig.filename).read_bytes()
        )  # the PNG beside it is the same
        assert_non_trivial_png(data)
        assert fig.caption and fig.caption in page.replace("&#x27;", "'").replace("&quot;", '"')
    for fig in result.figures:
        if fig.status != "ok":
            assert fig.reason and fig.reason in page.replace("&#x27;", "'")
            assert not (tmp_path / "out" / fig.filename).exists()
    assert "src='http" not in page and 'src="http' not in page  # nothing fetched from elsewhere


def test_write_report_returns_html_path_and_overwrites_stale_pngs(tmp_path: Path) -> None:
    stale = tmp_path / "1_scaling_law.png"
    stale.write_bytes(b"old")
    path = write_report(tiny_plan(phases=("pretrain",)), tmp_path)  # no law: plot 1 is missing
    assert path == tmp_path / "report.html" and path.is_file()
    assert not stale.exists()


def test_plan_without_law_says_why(tmp_path: Path) -> None:
    figures = by_key(draw_figures(tiny_plan(), strict=True, keys={"1_scaling_law", "6_phases"}))
    law = figures["1_scaling_law"]
    assert law.status == "missing" and "no scaling law" in (law.reason or "")
    assert figures["6_phases"].status == "ok"


@pytest.mark.parametrize(
    "plan",
    [
        tiny_plan(phases=("sft", "dpo")),  # post-training only: no pretrain phase
        tiny_plan(pp=4, global_batch=16),
        tiny_plan(moe=True, ep=1),
    ],
    ids=["post-training-only", "pp4", "moe"],
)
def test_partial_plans_never_crash(plan: Plan, tmp_path: Path) -> None:
    result = build_report(with_law(plan), tmp_path, strict=True)
    for fig in result.figures:
        assert fig.status in ("ok", "missing"), (fig.key, fig.reason)
        assert fig.status == "ok" or fig.reason


def test_unreadable_plan_law_is_explained_not_raised() -> None:
    plan = with_law(tiny_plan(), form="chinchilla", params={"E": "x"})
    fig = one(plan, "1_scaling_law")
    assert fig.status == "missing" and "could not be rebuilt" in (fig.reason or "")


def _fit_file(path: Path, method: str, *, bootstrap: bool) -> Path:
    """A FIT.json as `scaleplan fit` writes it, on synthetic IsoFLOP runs of the Chinchilla law."""
    from scaleplan.planner.laws import get_preset
    from scaleplan.planner.laws.io import fit_document, write_fit
    from scaleplan.planner.laws.isoflop import approach2

    truth = get_preset("chinchilla")
    rng = np.random.default_rng(0)
    budgets = [1e18, 1e19, 1e20]
    n = np.concatenate([np.geomspace(c**0.5 / 40, c**0.5 / 4, 7) for c in budgets])
    c = np.repeat(budgets, 7)
    d = c / (6 * n)
    loss = truth.loss(n, d) * np.exp(rng.normal(0, 0.002, n.size))
    points = {"N": n.tolist(), "D": d.tolist(), "loss": loss.tolist(), "flops": c.tolist()}
    if method == "approach2":
        ff = approach2(n, d, loss, c)
        doc = fit_document(
            ff.law,
            method=method,
            points=points,
            extra={"isoflop": {"optima": ff.optima, "parabolas": ff.parabolas}},
        )
    else:
        names = list(truth.params)
        boot = None
        if bootstrap:  # rows of parameters, one per resample, as uncertainty.bootstrap records them
            rows = [
                [v * float(rng.normal(1, 0.02)) for v in truth.params.values()] for _ in range(60)
            ]
            boot = {"names": names, "samples": rows, "n_samples": len(rows)}
        doc = fit_document(truth, method=method, points=points, bootstrap=boot)
    write_fit(path, doc)
    return path


def test_fitted_law_draws_points_and_band(tmp_path: Path) -> None:
    fit = _fit_file(tmp_path / "fit.json", "epoch", bootstrap=True)
    fig = one(tiny_plan(), "1_scaling_law", str(fit))
    assert fig.status == "ok"
    assert "95 % bootstrap band" in fig.caption and "runs as points" in fig.caption
    assert "with 95 % bootstrap bands" in fig.caption
    assert "No data points" not in fig.caption


def test_isoflop_fit_draws_isoflop_curves(tmp_path: Path) -> None:
    fit = _fit_file(tmp_path / "fit.json", "approach2", bootstrap=False)
    fig = one(tiny_plan(), "1_scaling_law", str(fit))
    assert fig.status == "ok" and "IsoFLOP slices" in fig.caption
    assert "at 3 compute budgets" in fig.caption and "(3 drawn)" in fig.caption
    assert "per-budget optima" in fig.caption


def test_preset_law_says_no_data_points() -> None:
    fig = one(with_law(tiny_plan()), "1_scaling_law")
    assert fig.status == "ok" and "No data points" in fig.caption


def test_unexpected_failure_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleplan.planner.report import plot_phases

    def broken(ctx: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(plot_phases, "build", broken)
    result = build_report(tiny_plan(phases=("pretrain",)), tmp_path)
    fig = by_key(result.figures)["6_phases"]
    assert fig.status == "failed" and fig.reason == "RuntimeError: boom"
    assert "Could not draw this plot: RuntimeError: boom" in result.html_path.read_text()
    with pytest.raises(RuntimeError, match="boom"):
        draw_figures(tiny_plan(), strict=True, keys={"6_phases"})


# --- CLI ---------------------------------------------------------------------------------------


def _plan_file(tmp_path: Path, plan: Plan | None = None) -> Path:
    path = tmp_path / "plan.json"
    path.write_text((plan or with_law(tiny_plan(pp=2))).model_dump_json(indent=1))
    return path


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_writes_report_and_lists_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file = _plan_file(tmp_path)
    out = tmp_path / "rep"
    assert _run(["report", str(plan_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'report.html'}" in printed and str(out / "6_phases.png") in printed
    assert (out / "report.html").is_file()
    # a second run refuses to overwrite without --force, and writes nothing
    before = (out / "report.html").stat().st_mtime_ns
    assert _run(["report", str(plan_file), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "report.html").stat().st_mtime_ns == before
    assert _run(["report", str(plan_file), "--out", str(out), "--force", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["html"] == str(out / "report.html")
    assert [f["key"] for f in obj["figures"]] == KEYS
    assert all((f["file"] is None) == (f["status"] != "ok") for f in obj["figures"])


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "malformed JSON"), ('{"name": "x"}', "required field is missing")],
)
def test_cli_bad_plan_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text(content)
    assert _run(["report", str(bad), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "rep").exists()


def test_cli_missing_plan_and_bad_fit_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["report", str(tmp_path / "nope.json"), "--out", str(tmp_path / "rep")]) == 2
    assert "file not found" in capsys.readouterr().err
    plan_file = _plan_file(tmp_path)
    bad_fit = tmp_path / "fit.json"
    bad_fit.write_text('{"schema": "other"}')
    assert (
        _run(["report", str(plan_file), "--out", str(tmp_path / "rep"), "--fit", str(bad_fit)]) == 2
    )
    assert "not a FIT.json" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


# --- the shipped examples ------------------------------------------------------------------------

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "specs" / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_budget_report_under_10s(example: Path, tmp_path: Path) -> None:
    planning = pytest.importorskip(
        "scaleplan.planner.planning", reason="the planner (planner/planning.py) is not installed"
    )
    from scaleplan.specs.budget import BudgetSpec
    from scaleplan.specs.loader import load_spec

    plan = planning.plan(load_spec(BudgetSpec, example))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = build_report(plan, tmp_path, strict=True)
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    # CPU time is the bound: on a shared 2-core machine wall time also counts other jobs' load.
    assert cpu_s < 10.0, f"{example.name}: report took {cpu_s:.1f} s of CPU ({wall_s:.1f} s wall)"
    figures = by_key(result.figures)
    for key in ("1_scaling_law", "3_layout_search", "4_memory", "5_pipeline_timeline", "6_phases"):
        assert figures[key].status == "ok", (key, figures[key].reason)
    assert figures["2_loss_forecast"].status == "ok" or figures["2_loss_forecast"].reason


# --- loss forecast ---------------------------------------------------------------------------------


def test_lr_per_step_follows_the_megatron_schedule() -> None:
    from scaleplan.planner.report.forecast_data import lr_per_step
    from scaleplan.specs.plan import ScheduleSpec

    peak = 1e-3
    warm = lr_per_step(ScheduleSpec(style="wsd", peak_lr=peak, warmup_steps=4), 10)
    assert np.allclose(warm, [0, peak / 4, peak / 2, 3 * peak / 4] + [peak] * 6)
    anneal = lr_per_step(
        ScheduleSpec(style="wsd", peak_lr=peak, start_lr=peak, decay_steps=100, decay_shape="sqrt"),
        100,
    )
    i = np.arange(100)
    assert np.allclose(anneal, peak * (1 - np.sqrt(i / 100)))  # Megatron's minus_sqrt WSD decay
    cos = lr_per_step(
        ScheduleSpec(style="cosine", peak_lr=peak, min_lr=peak / 10, warmup_steps=10), 110
    )
    assert (
        cos[10] == pytest.approx(peak)
        and cos[60] == pytest.approx(0.55 * peak)
        and cos[10:].min() >= peak / 10
    )
    lin = lr_per_step(ScheduleSpec(style="linear", peak_lr=peak, warmup_steps=0), 50)
    assert lin[0] == pytest.approx(peak) and np.all(np.diff(lin) < 0)
    assert np.all(lr_per_step(ScheduleSpec(style="constant", peak_lr=peak), 7) == peak)


def test_forecast_without_schedule_fit_or_loss_says_why() -> None:
    fig = one(with_law(tiny_plan()), "2_loss_forecast")
    assert fig.status == "missing" and "schedule fit" in (fig.reason or "")


def test_forecast_from_published_prior_is_anchored_to_the_law() -> None:
    plan = with_law(tiny_plan(), preset="chinchilla", predicted_loss=3.0)
    fig = one(plan, "2_loss_forecast")
    assert fig.status == "ok" and "multi-power law's default parameters" in fig.caption
    assert "The anneal lowers the forecast loss by" in fig.caption


def test_forecast_from_a_schedule_fit(tmp_path: Path) -> None:
    from scaleplan.planner.laws.schedule_law import MPL_PRESETS
    from scaleplan.specs.budget import BudgetSpec

    fit = tmp_path / "schedule.json"
    fit.write_text(json.dumps({"params": MPL_PRESETS["100M"].to_dict()}))
    budget = BudgetSpec(gpu="H100", gpus=1, hours=1, law={"schedule_fit": str(fit)})
    plan = tiny_plan(phases=("pretrain", "anneal"), steps=200).model_copy(update={"budget": budget})
    fig = one(plan, "2_loss_forecast")
    assert fig.status == "ok" and "fitted to your loss curves" in fig.caption
    gain = float(re.search(r"lowers the forecast loss by ([0-9.]+) nats", fig.caption).group(1))
    assert gain > 0  # decaying the LR lowers the loss (Luo et al. 2025)
    fit.write_text('{"params": {"L0": 1}}')
    fig = one(plan, "2_loss_forecast")
    assert fig.status == "missing" and "no multi-power-law parameters" in (fig.reason or "")
    fit.unlink()
    fig = one(plan, "2_loss_forecast")
    assert fig.status == "missing" and "was not found" in (fig.reason or "")


@pytest.fixture(scope="module")
def planned_week() -> Plan:
    planning = pytest.importorskip(
        "scaleplan.planner.planning", reason="the planner is not installed"
    )
    from scaleplan.specs.budget import BudgetSpec
    from scaleplan.specs.loader import load_spec

    return planning.plan(load_spec(BudgetSpec, EXAMPLES_DIR / "h100x8-week.yaml"))


def test_planned_report_without_law_search_or_estimates(planned_week: Plan, tmp_path: Path) -> None:
    stripped = planned_week.model_copy(
        update={
            "law": {},
            "search": {},
            "budget": None,
            "phases": tuple(p.model_copy(update={"estimate": None}) for p in planned_week.phases),
        }
    )
    figures = by_key(build_report(stripped, tmp_path, strict=True).figures)
    assert "no scaling law" in (figures["1_scaling_law"].reason or "")
    assert "schedule fit" in (figures["2_loss_forecast"].reason or "")
    assert "no layout search" in (figures["3_layout_search"].reason or "")
    for key in ("4_memory", "5_pipeline_timeline", "6_phases"):
        assert figures[key].status == "ok", key


def test_planned_report_search_plot_marks_the_chosen_layout(planned_week: Plan) -> None:
    fig = one(planned_week, "3_layout_search")
    assert fig.status == "ok" and "Pareto front" in fig.caption
    step_s = planned_week.phase("pretrain").estimate.step_time_s
    assert f"{step_s:.3g} s per step" in fig.caption  # the star sits at the plan's own step time
    # the scatter re-runs the plan's search: every layout it evaluated, and its choice again
    evaluated = planned_week.search["pretrain"]["layouts_evaluated"]
    assert f"of {evaluated:,} evaluated" in fig.caption and "re-run" not in fig.caption


def test_evaluated_layouts_is_the_search_with_every_candidate_kept() -> None:
    from scaleplan.planner.search import search_layouts
    from scaleplan.planner.search_evaluated import evaluated_layouts
    from scaleplan.specs.hardware import make_cluster
    from scaleplan.specs.model import get_model

    model, cluster = get_model("llama3-8b"), make_cluster("H100", 16)
    ev = evaluated_layouts(model, cluster, 4096, 256)
    plain = search_layouts(model, cluster, 4096, 256)
    assert ev.result.best == plain.best and ev.layouts_evaluated == plain.layouts_evaluated
    assert ev.step_time_s.size == plain.layouts_feasible
    assert np.isclose(
        ev.step_time_s, plain.step["step_time_s"], rtol=1e-12
    ).any()  # the best is among them
    assert ev.oom_step_time_s.size == plain.rejected_by_rule.get("out of memory", 0)
    assert np.all(ev.oom_over_bytes > 0) and np.all(ev.headroom_bytes >= 0)


def test_forecast_from_a_size_aware_schedule_fit(tmp_path: Path) -> None:
    """A fit over several model sizes is evaluated at the plan's model size, and the caption
    says when that is beyond the largest size fitted."""
    from scaleplan.specs.budget import BudgetSpec

    law = sized_mpl_truth()
    fit = tmp_path / "schedule.json"
    doc = {"law": {"form": "mpl-sized", "params": law.to_dict(), "sizes": [25e6, 1e8]}}
    fit.write_text(json.dumps(doc))
    budget = BudgetSpec(gpu="H100", gpus=1, hours=1, law={"schedule_fit": str(fit)})
    plan = tiny_plan(phases=("pretrain", "anneal"), steps=200).model_copy(update={"budget": budget})
    fig = one(plan, "2_loss_forecast")
    n = plan.model.params_total
    assert fig.status == "ok" and f"at N={n:.3g}" in fig.caption
    assert (f"{n / 1e8:.3g}x beyond the largest fitted size" in fig.caption) == (n > 1e8)
    doc["law"]["params"].pop("K")
    fit.write_text(json.dumps(doc))
    fig = one(plan, "2_loss_forecast")
    assert fig.status == "missing" and "'K'" in (fig.reason or "")
