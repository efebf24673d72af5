"""Bad input to `scaleplan fit` and `scaleplan optimal --fit`: one error line naming the file or
option and the reason, exit 2, no traceback, and no output written half-way."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_error, run_cli

from scaleplan.planner.laws import ChinchillaLaw, law_from_dict
from scaleplan.planner.laws.io import fit_document, write_fit
from scaleplan.specs.errors import SpecError

LAW = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def _runs_csv(path, n: int = 12) -> str:
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(5e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(5e11), n))
    rows = ["params,tokens,loss"] + [
        f"{a:.6g},{b:.6g},{c:.8g}" for a, b, c in zip(N, D, LAW.loss(N, D), strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _curves_csv(path, last_step: str = "300") -> str:
    rows = ["run,step,lr,loss"]
    for step, lr, loss in ((0, 1e-3, 5.0), (100, 1e-3, 4.0), (200, 5e-4, 3.5)):
        rows.append(f"a,{step},{lr},{loss}")
    rows.append(f"a,{last_step},1e-4,3.2")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


# --- fit: output paths, checked before fitting ------------------------------------------------


def test_fit_out_in_a_missing_folder_is_created(tmp_path, capsys) -> None:
    out = tmp_path / "no" / "dir" / "f.json"
    code, _, err = run_cli(["fit", _runs_csv(tmp_path / "r.csv"), "--out", str(out)], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["law"]["form"] == "chinchilla"


@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_fit_output_folder_that_cannot_be_created(tmp_path, capsys, option) -> None:
    name = "f.json" if option == "--out" else "p.png"
    code, _, err = run_cli(
        ["fit", _runs_csv(tmp_path / "r.csv"), option, f"/proc/x/{name}"], capsys
    )
    assert_one_error(code, err, option, "/proc/x")


def test_fit_plot_suffix_matplotlib_cannot_write(tmp_path, capsys) -> None:
    plot = tmp_path / "p.xyz"
    code, _, err = run_cli(["fit", _runs_csv(tmp_path / "r.csv"), "--plot", str(plot)], capsys)
    assert_one_error(code, err, "--plot", ".xyz", "png", "svg")
    assert not plot.exists()


def test_fit_bad_plot_writes_no_out(tmp_path, capsys) -> None:
    out = tmp_path / "f.json"
    args = ["fit", _runs_csv(tmp_path / "r.csv"), "--out", str(out)]
    code, _, err = run_cli([*args, "--plot", "/proc/x/p.png"], capsys)
    assert_one_error(code, err, "--plot")
    code, _, err = run_cli([*args, "--plot", str(tmp_path / "p.xyz")], capsys)
    assert_one_error(code, err, "--plot")
    assert not out.exists()


def test_fit_mpl_bad_plot_writes_no_out(tmp_path, capsys) -> None:
    out = tmp_path / "f.json"
    curves = _curves_csv(tmp_path / "c.csv")
    code, _, err = run_cli(
        ["fit", curves, "--law", "mpl", "--out", str(out), "--plot", "/proc/x/p.png"], capsys
    )
    assert_one_error(code, err, "--plot")
    assert not out.exists()


# --- fit: input files and numeric options -----------------------------------------------------


@pytest.mark.parametrize("law", ["chinchilla", "mpl"])
def test_fit_non_utf8_csv(tmp_path, capsys, law) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"run,step,lr,loss,params,tokens\n\xff\xfe\x00\x81,1,2,3\n")
    code, _, err = run_cli(["fit", str(path), "--law", law], capsys)
    assert_one_error(code, err, str(path), "not UTF-8")


def test_fit_mpl_refuses_absurd_step_counts(tmp_path, capsys) -> None:
    curves = _curves_csv(tmp_path / "c.csv", last_step="1e10")
    code, _, err = run_cli(["fit", curves, "--law", "mpl"], capsys)
    assert_one_error(code, err, curves, "step", "row 5")


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_fit_ci_compute_must_be_positive_and_finite(tmp_path, capsys, value) -> None:
    runs = _runs_csv(tmp_path / "r.csv")
    code, _, err = run_cli(["fit", runs, "--bootstrap", "2", "--ci-compute", value], capsys)
    assert_one_error(code, err, "--ci-compute", "positive")


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_fit_delta_names_the_option(tmp_path, capsys, value) -> None:
    code, _, err = run_cli(["fit", _runs_csv(tmp_path / "r.csv"), "--delta", value], capsys)
    assert_one_error(code, err, "--delta")


# --- optimal --fit with an edited FIT.json ----------------------------------------------------


def _fit_json(tmp_path, edit) -> str:
    N = [1e8, 1e9, 1e10]
    D = [2e9, 2e10, 2e11]
    doc = fit_document(
        LAW,
        method="epoch",
        points={"N": N, "D": D, "loss": LAW.loss(N, D).tolist(), "flops": [1e18, 1e20, 1e22]},
        bootstrap={
            "n_samples": 2,
            "seed": 0,
            "names": list(LAW.params),
            "samples": [list(LAW.params.values())] * 2,
            "ci": {},
        },
        extra={"max_fitted_flops": 1e22},
    )
    edit(doc)
    path = tmp_path / "FIT.json"
    write_fit(path, doc)
    return str(path)


def _set(path: tuple[str, ...], value):
    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (_set(("law", "params", "alpha"), -1), ("law.params.alpha", "positive")),
        (_set(("law", "params", "beta"), 0), ("law.params.beta", "positive")),
        (_set(("law", "params", "A"), "x"), ("law.params.A", "number")),
        (_set(("law", "params", "E"), -0.5), ("law.params.E", ">= 0")),
        (_set(("max_fitted_flops",), "big"), ("max_fitted_flops",)),
        (_set(("max_fitted_flops",), -5), ("max_fitted_flops",)),
        (_set(("bootstrap",), {"samples": "x"}), ("bootstrap",)),
        (_set(("bootstrap",), [1, 2]), ("bootstrap",)),
        (_set(("bootstrap", "samples"), [[1.0, 2.0]]), ("bootstrap.samples", "row 0")),
        (_set(("bootstrap", "samples"), [[1.8, 480, 2100, -0.35, 0.37]]), ("bootstrap.samples",)),
    ],
)
def test_optimal_refuses_an_edited_fit(tmp_path, capsys, edit, needles) -> None:
    fit = _fit_json(tmp_path, edit)
    code, _, err = run_cli(["optimal", "--compute", "1e23", "--fit", fit, "--json"], capsys)
    assert_one_error(code, err, fit, *needles)


def test_optimal_accepts_zero_irreducible_loss(tmp_path, capsys) -> None:
    fit = _fit_json(tmp_path, _set(("law", "params", "E"), 0))
    code, out, err = run_cli(["optimal", "--compute", "1e23", "--fit", fit, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["ci"]["N"][0] > 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"form": "kaplan", "params": {"N_c": 8.8e13, "D_c": 5.4e13, "alpha_N": 0, "alpha_D": 0.1}}, "law.params.alpha_N"),
        ({"form": "frontier", "params": {"n_coef": 0.1, "a": -0.5, "d_coef": 1.0, "b": 0.5}}, "law.params.a"),
        ({"form": "chinchilla", "params": {**LAW.params, "E": float("nan")}}, "law.params.E"),
    ],
)  # fmt: skip
def test_law_from_dict_names_the_bad_parameter(data, field) -> None:
    with pytest.raises(SpecError) as exc:
        law_from_dict(data, source="x.json")
    assert exc.value.field == field and exc.value.source == "x.json"
