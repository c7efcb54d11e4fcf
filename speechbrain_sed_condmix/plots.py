"""Figures for SED evaluation: PSD-ROC curves and event rolls.

Drawn with matplotlib's object API on an Agg canvas: no pyplot state, no
display needed, safe inside training jobs.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from pathlib import Path

import numpy as np
import pandas as pd
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


def _event_tuples(events):
    """``(onset, offset, label)`` tuples from a DataFrame or a sequence."""
    if events is None:
        return []
    if isinstance(events, pd.DataFrame):
        columns = ["onset", "offset", "event_label"]
        missing = [c for c in columns if c not in events.columns]
        if missing:
            raise ValueError(f"events lack column(s) {missing}.")
        events = events[columns].itertuples(index=False, name=None)
    return [(float(on), float(off), str(label)) for on, off, label in events]


def plot_event_roll(
    scores,
    filename,
    detections=None,
    ground_truth=None,
    title=None,
):
    """Save an event roll of one clip: scores, ground truth, detections.

    One row per class: the frame scores as a heatmap over time, the
    ground-truth events as a band at the top of the row and the detected
    events as a band at its bottom.

    Arguments
    ---------
    scores : pandas.DataFrame
        sed_scores_eval DataFrame of the clip (``onset, offset,
        <classes>``); frames may have unequal lengths.
    filename : str or pathlib.Path
        Output PNG path; parent folders are created.
    detections : pandas.DataFrame or sequence, optional
        Detected events (``onset, offset, event_label`` columns, or
        tuples).
    ground_truth : pandas.DataFrame or sequence, optional
        Reference events, same forms.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        The written file.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_sed_condmix.scores import frame_scores_to_dataframe
    >>> frames = np.zeros((156, 2))
    >>> frames[20:60, 0] = 0.9
    >>> df = frame_scores_to_dataframe(frames, ["Dog", "Cat"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = plot_event_roll(
    ...         df, tmp + "/roll.png", detections=[(1.28, 3.84, "Dog")],
    ...         ground_truth=[(1.2, 4.0, "Dog")], title="clip")
    ...     path.read_bytes()[:4] == b"\\x89PNG"
    True
    """
    from matplotlib.patches import Patch

    classes = [c for c in scores.columns if c not in ("onset", "offset")]
    if not classes:
        raise ValueError("scores has no class columns.")
    row = {name: i for i, name in enumerate(classes)}
    edges = np.append(
        scores["onset"].to_numpy(dtype=float),
        float(scores["offset"].iloc[-1]),
    )
    values = scores[classes].to_numpy(dtype=float).T
    # cSEBB box scores use -inf outside boxes; show those as 0.
    values = np.where(np.isfinite(values), values, 0.0)
    filename = Path(filename)
    filename.parent.mkdir(parents=True, exist_ok=True)

    figure = Figure(figsize=(12, 1.5 + 0.45 * len(classes)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    mesh = axes.pcolormesh(
        edges,
        np.arange(len(classes) + 1),
        values,
        cmap="Greys",
        vmin=0.0,
        vmax=1.0,
        shading="flat",
    )
    figure.colorbar(mesh, ax=axes, pad=0.01, label="score")
    bands = (
        (ground_truth, 0.05, "tab:green", "ground truth"),
        (detections, 0.65, "tab:red", "detections"),
    )
    handles = []
    for events, offset, color, label in bands:
        if events is None:
            continue
        handles.append(Patch(color=color, alpha=0.8, label=label))
        for onset, offset_s, name in _event_tuples(events):
            if name not in row:
                raise ValueError(f"event label {name!r} is not a class.")
            axes.broken_barh(
                [(onset, offset_s - onset)],
                (row[name] + offset, 0.3),
                facecolors=color,
                alpha=0.8,
            )
    axes.set_xlim(edges[0], edges[-1])
    axes.set_ylim(len(classes), 0)  # first class on top
    axes.set_yticks(np.arange(len(classes)) + 0.5, labels=classes)
    for y in range(1, len(classes)):
        axes.axhline(y, color="tab:gray", linewidth=0.5)
    axes.set_xlabel("time (s)")
    if title:
        axes.set_title(title, loc="left")
    if handles:
        # Above the axes, right of the title: the rows stay uncovered.
        axes.legend(
            handles=handles,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=len(handles),
            frameon=False,
        )
    figure.tight_layout()
    figure.savefig(filename, dpi=100)
    return filename
