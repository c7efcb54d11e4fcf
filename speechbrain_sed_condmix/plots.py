"""Figures for SED evaluation (PSD-ROC for now).

Drawn with matplotlib's object API on an Agg canvas: no pyplot state, no
display needed, safe inside training jobs.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_psd_roc(psd_roc, psds_value, params, filename):
    """Save a PSD-ROC curve with its shaded area as a PNG.

    Arguments
    ---------
    psd_roc : tuple
        ``(etpr, efpr)`` arrays, e.g. ``compute_sed_metrics(...,
        return_psd_roc=True)["psd_roc"]["psds1"]``.
    psds_value : float
        The PSDS shown in the title.
    params : mapping
        PSDS parameters (``metrics.PSDS1_PARAMS`` or ``PSDS2_PARAMS``):
        ``dtc_threshold``, ``gtc_threshold``, ``cttc_threshold``,
        ``alpha_ct``, ``alpha_st``, ``max_efpr`` and optionally
        ``unit_of_time``.
    filename : str or pathlib.Path
        Output PNG path; parent folders are created.

    Returns
    -------
    pathlib.Path
        The written file.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_sed_condmix.metrics import PSDS1_PARAMS
    >>> curve = (np.array([0.2, 0.6, 0.6]), np.array([0.0, 40.0, 100.0]))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_psd_roc(curve, 0.52, PSDS1_PARAMS, tmp + "/roc.png")
    ...     path.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    etpr, efpr = (np.asarray(a, dtype=float) for a in psd_roc)
    max_efpr = float(params["max_efpr"])
    cttc = params.get("cttc_threshold")
    cttc = "na" if cttc is None else f"{cttc:.2f}"
    filename = Path(filename)
    filename.parent.mkdir(parents=True, exist_ok=True)

    figure = Figure(figsize=(7, 7))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.step(efpr, etpr, "b-", where="post", label="PSD-ROC")
    axes.fill_between(
        efpr, etpr, 0, step="post", alpha=0.3, color="tab:blue", label="AUC"
    )
    axes.axvline(max_efpr, linestyle="--", color="k")
    axes.set_xlim(0, max_efpr)
    axes.set_ylim(0, 1)
    axes.set_xlabel(f"eFPR per {params.get('unit_of_time', 'hour')}")
    axes.set_ylabel("eTPR")
    axes.set_title(
        f"PSDS: {psds_value:.5f}\n"
        f"dtc: {params['dtc_threshold']:.2f}, "
        f"gtc: {params['gtc_threshold']:.2f}, cttc: {cttc}, "
        f"alpha_st: {params['alpha_st']:.2f}, "
        f"alpha_ct: {params['alpha_ct']:.2f}, max_efpr: {max_efpr:g}"
    )
    axes.grid(True)
    axes.legend(loc="lower right")
    figure.savefig(filename)
    return filename
