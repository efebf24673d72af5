"""`scaleplan fit` and `scaleplan optimal`: JSON output, FIT.json round trip, friendly errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli as _run
from conftest import sized_mpl_truth

from scaleplan.planner.laws import ChinchillaLaw

LAW = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def _csv(
    path, header=("params", "tokens", "loss"), n: int = 30, seed: int = 0, transform=None
) -> str:
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(5e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(5e11), n))
    L = LAW.loss(N, D)
    rows = [",".join(header)] + [
        f"{a:.6g},{b:.6g},{c:.8g}" for a, b, c in zip(N, D, L, strict=True)
    ]
    if transform:
        rows = transform(rows)
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_fit_json_out_and_optimal_round_trip(tmp_path, capsys) -> None:
    runs = _csv(tmp_path / "runs.csv")
    fit_json = tmp_path / "FIT.json"
    code, out, err = _run(
        ["fit", runs, "--json", "--out", str(fit_json), "--bootstrap", "3", "--ci-compute", "1e21"],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert doc["params"]["alpha"] == pytest.approx(0.35, rel=1e-3)
    assert doc["n_points"] == 30 and doc["loss"] >= 0 and doc["seconds"] > 0
    assert set(doc["ci"]) >= {"E", "alpha", "N_opt", "D_opt"}
    saved = json.loads(fit_json.read_text())
    assert saved["method"] == "epoch" and len(saved["points"]["N"]) == 30
    assert len(saved["bootstrap"]["samples"]) == 3
    code, out, err = _run(
        ["optimal", "--compute", "1e23", "--fit", str(fit_json), "--json"], capsys
    )
    assert code == 0, err
    res = json.loads(out)
    assert 6 * res["N"] * res["D"] == pytest.approx(1e23)
    assert res["N"] == pytest.approx(float(LAW.optimal(1e23)[0]), rel=0.01)
    assert any("beyond the largest fitted compute" in w for w in res["warnings"])
    assert res["ci"]["N"][0] <= res["ci"]["N"][2]


def test_columns_mapping_and_plot(tmp_path, capsys) -> None:
    runs = _csv(tmp_path / "runs.csv", header=("model_size", "training_tokens", "final_loss"))
    png = tmp_path / "fit.png"
    code, out, err = _run(
        [
            "fit",
            runs,
            "--columns",
            "params=model_size,tokens=training_tokens,loss=final_loss",
            "--plot",
            str(png),
            "--json",
            "--loo",
        ],
        capsys,
    )
    assert code == 0, err
    assert png.stat().st_size > 1000
    loo = json.loads(out)["loo"]
    assert loo["rmse_log"] < 1e-4  # exact synthetic data: each point is predicted without itself


@pytest.mark.parametrize(
    ("transform", "header", "n", "message"),
    [
        (None, ("params", "tokens", "loss_x"), 30, "missing column 'loss'"),
        (
            lambda rows: rows[:5] + ["1e9,-3e9,2.5"] + rows[6:],
            ("params", "tokens", "loss"),
            30,
            "must be positive",
        ),
        (
            lambda rows: rows[:5] + ["1e9,abc,2.5"] + rows[6:],
            ("params", "tokens", "loss"),
            30,
            "not a number",
        ),
        (None, ("params", "tokens", "loss"), 4, "too few"),
    ],
)
def test_friendly_errors_exit_2(tmp_path, capsys, transform, header, n, message) -> None:
    runs = _csv(tmp_path / "runs.csv", header=header, n=n, transform=transform)
    code, out, err = _run(["fit", runs], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_fit_approach2_from_isoflop_csv(tmp_path, capsys) -> None:
    law = ChinchillaLaw(E=1.7, A=400.0, B=400.0, alpha=0.34, beta=0.34)
    lines = ["params,tokens,loss,flops"]
    for C in np.geomspace(1e18, 1e21, 6):
        n_opt = float(law.optimal(C)[0])
        for f in np.geomspace(1 / 6, 6, 9):
            n = n_opt * f
            lines.append(f"{n},{C / (6 * n)},{float(law.loss(n, C / (6 * n)))},{C}")
    path = tmp_path / "iso.csv"
    path.write_text("\n".join(lines) + "\n")
    out_json = tmp_path / "FIT.json"
    code, out, err = _run(
        ["fit", str(path), "--method", "approach2", "--json", "--out", str(out_json)], capsys
    )
    assert code == 0, err
    assert json.loads(out)["params"]["a"] == pytest.approx(0.5, abs=0.02)
    doc = json.loads(out_json.read_text())
    assert doc["method"] == "approach2" and len(doc["isoflop"]["parabolas"]) == 6


def test_optimal_presets_and_constraints(capsys) -> None:
    code, out, _ = _run(["optimal", "--compute", "1e24", "--preset", "epoch", "--json"], capsys)
    free = json.loads(out)
    assert code == 0 and free["epochs"] == 1.0
    code, out, _ = _run(
        ["optimal", "--compute", "1e24", "--preset", "epoch", "--max-tokens", "5e11", "--json"],
        capsys,
    )
    capped = json.loads(out)
    assert capped["epochs"] > 1 and capped["N"] > free["N"]
    code, out, _ = _run(
        [
            "optimal",
            "--compute",
            "1e24",
            "--preset",
            "epoch",
            "--inference-tokens",
            "1e14",
            "--json",
        ],
        capsys,
    )
    assert json.loads(out)["N"] < free["N"]
    code, out, err = _run(["optimal", "--compute", "1e24", "--preset", "nope"], capsys)
    assert code == 2 and "law.preset" in err
    code, out, err = _run(["optimal", "--compute", "1e24"], capsys)
    assert code == 0 and "parameters N" in out


def test_epoch_protocol_through_the_cli(shared_data, capsys) -> None:
    code, out, err = _run(
        [
            "fit",
            str(shared_data / "chinchilla_epoch.csv"),
            "--drop-highest",
            "5",
            "--delta",
            "1e-3",
            "--json",
            "--columns",
            "params=model_size,tokens=training_tokens,flops=training_flop",
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n_points"] == 240
    assert doc["params"]["alpha"] == pytest.approx(0.34731, abs=1e-3)
    assert doc["params"]["B"] == pytest.approx(2143.86, rel=0.01)


def test_fit_mpl_from_loss_curves_with_forecast_plot(tmp_path, capsys) -> None:
    from scaleplan.planner.laws.schedule_law import MPLParams, make_schedule, predict_loss_curve

    truth = MPLParams(L0=2.5, A=0.6, alpha=0.45, B=450.0, C=2.0, beta=0.6, gamma=0.65)
    lines = ["name,it,learning_rate,val_loss"]
    for kind in ("constant", "cosine", "wsd"):
        lr = make_schedule(kind, 3000, 3e-4, 100, decay_fraction=0.25)
        curve = predict_loss_curve(truth, lr)
        lines += [f"{kind},{s},{lr[s]:.9g},{curve[s]:.9g}" for s in range(100, 3000, 50)]
    path = tmp_path / "curves.csv"
    path.write_text("\n".join(lines) + "\n")
    png = tmp_path / "forecast.png"
    code, out, err = _run(
        [
            "fit",
            str(path),
            "--law",
            "mpl",
            "--columns",
            "run=name,step=it,lr=learning_rate,loss=val_loss",
            "--json",
            "--plot",
            str(png),
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["params"]) == {"L0", "A", "alpha", "B", "C", "beta", "gamma"}
    assert doc["loss"] < 3e-3  # RMSE in nats
    for v in doc["final_loss"].values():
        assert v["predicted"] == pytest.approx(v["measured"], abs=3e-3)
    assert png.stat().st_size > 1000
    code, _, err = _run(["fit", str(path), "--law", "mpl"], capsys)
    assert code == 2 and "missing column 'run'" in err


def test_spreadsheet_bom_is_read(tmp_path, capsys) -> None:
    """A CSV saved by a spreadsheet (UTF-8 byte-order mark) fits like the plain file."""
    plain = _csv(tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeff" + (tmp_path / "plain.csv").read_text(), encoding="utf-8")
    fits = []
    for path in (plain, str(bom)):
        code, out, err = _run(["fit", path, "--json"], capsys)
        assert code == 0, err
        fits.append(json.loads(out)["params"])
    assert fits[0] == pytest.approx(fits[1])


def _sized_curves_csv(path, truth, sizes: dict[str, float]) -> None:
    from scaleplan.planner.laws.schedule_law import make_schedule, predict_loss_curve

    lines = ["run,model_size,step,lr,loss"]
    for label, n in sizes.items():
        for kind in ("constant", "cosine", "wsd"):
            lr = make_schedule(kind, 3000, 3e-4, 100, decay_fraction=0.25)
            curve = predict_loss_curve(truth.at(n), lr)
            lines += [
                f"{label}-{kind},{label},{s},{lr[s]:.9g},{curve[s]:.9g}"
                for s in range(100, 3000, 50)
            ]
    path.write_text("\n".join(lines) + "\n")


def test_fit_mpl_across_model_sizes_predicts_a_larger_one(tmp_path, capsys) -> None:
    """Curves of two sizes (a params column, here mapped from model_size) fit the size-aware
    law; with the true size exponent it predicts a 4x larger model's final loss."""
    from scaleplan.planner.laws.schedule_law import make_schedule, predict_final_loss
    from scaleplan.planner.laws.schedule_law_sized import SIZED_PARAM_NAMES, sized_from_dict

    truth = sized_mpl_truth()
    path = tmp_path / "curves.csv"
    _sized_curves_csv(path, truth, {"25M": 25e6, "100M": 1e8})
    out = tmp_path / "fit.json"
    args = ["fit", str(path), "--law", "mpl", "--columns", "params=model_size"]
    code, stdout, err = _run([*args, "--json", "--out", str(out)], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["law"] == "mpl-sized" and set(doc["params"]) == set(SIZED_PARAM_NAMES)
    assert doc["sizes"] == [25e6, 1e8] and doc["params"]["a_N"] == 0.34
    assert any("prior" in w for w in doc["warnings"])
    for v in doc["final_loss"].values():
        assert v["predicted"] == pytest.approx(v["measured"], abs=3e-3)
    saved = json.loads(out.read_text())
    assert saved["schema"] == "scaleplan.mpl-sized/1" and saved["law"]["sizes"] == [25e6, 1e8]
    law = sized_from_dict(saved["law"]["params"])
    cosine = make_schedule("cosine", 3000, 3e-4, 100)
    assert predict_final_loss(law.at(4e8), cosine) == pytest.approx(
        predict_final_loss(truth.at(4e8), cosine), rel=2e-3
    )
    code, stdout, _ = _run([*args, "--json", "--size-exponent", "0.2"], capsys)
    assert code == 0 and json.loads(stdout)["params"]["a_N"] == 0.2


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace("25M-cosine,25M,100,", "25M-cosine,100M,100,", 1), "two model sizes"),
        (lambda t: t.replace("25M-wsd,25M,", "25M-wsd,big,", 1), "not a model size"),
    ],
)
def test_fit_mpl_refuses_unclear_model_sizes(tmp_path, capsys, edit, needle) -> None:
    truth = sized_mpl_truth()
    path = tmp_path / "curves.csv"
    _sized_curves_csv(path, truth, {"25M": 25e6, "100M": 1e8})
    path.write_text(edit(path.read_text()))
    code, _, err = _run(
        ["fit", str(path), "--law", "mpl", "--columns", "params=model_size"], capsys
    )
    assert code == 2 and needle in err and "model_size" in err and "Traceback" not in err


@pytest.mark.parametrize(("true_exponent", "within"), [(0.34, True), (0.15, False)])
def test_fit_mpl_reports_its_own_extrapolation_error(tmp_path, capsys, true_exponent, within):
    """With three or more sizes the fit is also made without the largest one and scored on it:
    small when the size-exponent prior is right, large when it is wrong."""
    truth = sized_mpl_truth(K=300.0 if true_exponent == 0.34 else 12.0, a_N=true_exponent)
    path = tmp_path / "curves.csv"
    _sized_curves_csv(path, truth, {"25M": 25e6, "100M": 1e8, "400M": 4e8})
    code, stdout, err = _run(
        ["fit", str(path), "--law", "mpl", "--columns", "params=model_size", "--json"], capsys
    )
    assert code == 0, err
    doc = json.loads(stdout)
    check = doc["extrapolation"]
    assert check["held_out_size"] == 4e8 and len(check["error_pct"]) == 3
    worst = max(abs(e) for e in check["error_pct"].values())
    assert (worst < 0.3) == within
    assert any("extrapolation check" in w for w in doc["warnings"])
