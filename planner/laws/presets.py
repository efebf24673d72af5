"""Published scaling-law coefficients, typed in with their sources (the data files in
../shared/data are never copied into the project; `reference_coefficients.csv` there lists the
same values with their verification status)."""

from __future__ import annotations

import math

from scaleplan.specs.errors import SpecError

from .forms import ChinchillaLaw, DataConstrainedLaw, FrontierLaw, KaplanLaw, Law


def _presets() -> dict[str, Law]:
    return {
        # Hoffmann et al. 2022 eq. 10 (Approach 3), rounded as printed in the paper.
        "chinchilla": ChinchillaLaw(
            E=1.69,
            A=406.4,
            B=410.7,
            alpha=0.34,
            beta=0.28,
            source="Hoffmann et al. 2022 eq. 10 (Approach 3)",
        ),
        # Unrounded Approach 3 values as used by Epoch (epoch-research/analyzing-chinchilla
        # data_analysis.ipynb, true_params: log A, log B, log E, alpha, beta).
        "chinchilla-unrounded": ChinchillaLaw(
            E=math.exp(0.5267228),
            A=math.exp(6.0073404),
            B=math.exp(6.0179186),
            alpha=0.33917084,
            beta=0.2849083,
            source="Hoffmann et al. 2022 Approach 3, unrounded (Epoch notebook true_params)",
        ),
        # Besiroglu et al. 2024 (Epoch replication, Huber-likelihood MLE), eq. in Sec. 3.
        "epoch": ChinchillaLaw(
            E=1.8169,
            A=482.01,
            B=2085.43,
            alpha=0.3478,
            beta=0.3658,
            source="Besiroglu et al. 2024 (Epoch AI replication of Chinchilla, MLE fit)",
        ),
        # Epoch notebook cell 18: Huber(1e-3) grid fit on the 240 points (the fit this tool
        # reproduces from chinchilla_epoch.csv).
        "epoch-huber": ChinchillaLaw(
            E=1.81724,
            A=477.84,
            B=2143.86,
            alpha=0.34731,
            beta=0.36718,
            source="Besiroglu et al. 2024 notebook, Huber delta=1e-3 grid fit",
        ),
        # Kaplan et al. 2020 Table 2 / eq. 1.5: L(N, D) with N non-embedding parameters.
        "kaplan": KaplanLaw(
            N_c=6.4e13,
            D_c=1.8e13,
            alpha_N=0.076,
            alpha_D=0.103,
            source="Kaplan et al. 2020 eq. 1.5, Table 2",
            param_count="non-embedding",  # Kaplan's N excludes embeddings (Sec. 1.2)
        ),
        # Muennighoff et al. 2023 parametric fit (huggingface/datablations README).
        "data-constrained": DataConstrainedLaw(
            E=math.exp(0.6254804),
            A=math.exp(6.255414),
            B=math.exp(7.3049974),
            alpha=0.3526596,
            beta=0.3526596,
            R_D_star=15.387756,
            R_N_star=5.309743,
            source="Muennighoff et al. 2023 parametric fit (datablations README)",
        ),
        # Hoffmann et al. 2022 Approach 1 frontier: exponents a = b = 0.50 in Table 2; the
        # unrounded constants are not printed. These two power laws are the minimax fit
        # (isoflop.power_law_fit_minimax) to the 8 Table 3 rows other than the Gopher-budget row
        # (67B, not consistent with its neighbours), in units of each row's printed rounding;
        # bench/scaling.py recomputes them and checks every row.
        "chinchilla-approach1": FrontierLaw(
            n_coef=0.098952145,
            a=0.49815991,
            d_coef=1.6896904,
            b=0.50179970,
            source="Hoffmann et al. 2022 Approach 1 (Table 2 exponents 0.50; constants matched to Table 3)",
        ),
    }


def preset_names() -> list[str]:
    return sorted(_presets())


def get_preset(name: str) -> Law:
    presets = _presets()
    if name not in presets:
        raise SpecError(
            f"unknown preset {name!r}; expected one of {sorted(presets)}", field="law.preset"
        )
    return presets[name]
