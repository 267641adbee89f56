"""A notebook's handle on its study: paths, data, tables and figures written beside the executed notebook."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from seglib.config import StudyConfig
from seglib.paths import Paths, paths as find_paths
from seglib.studies.collect import GridResults, run_grid, write_outputs
from seglib.studies.pipeline import Prepared, prepare

log = logging.getLogger(__name__)

TITLES = {
    "stroke": "A. Ischemic stroke lesions in 3D: (2+1)D convolution, input size and loss",
    "prostate": "B. Prostate gland in 2D: BCE against Tversky losses over α",
    "brain": "C. Brain lower-grade glioma in 2D: losses, optimisers, U-Net and U-Net++",
}


@dataclass
class Session:
    cfg: StudyConfig
    paths: Paths
    out_dir: Path
    prepared: Prepared | None = None
    grid: GridResults | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES[self.cfg.study]

    def data(self) -> Prepared:
        if self.prepared is None:
            self.prepared = prepare(self.cfg, self.paths)
        return self.prepared

    def run(self, force: bool = False) -> GridResults:
        """Every run of the grid: trained now if the cache lacks it, read back otherwise."""
        self.grid = run_grid(self.cfg, self.data(), self.paths, force=force)
        return self.grid

    def table(self, df: pd.DataFrame, label: str, empty: str | None = None, best: dict | None = None):
        """Record ``df`` as table ``label`` (written as CSV at the end, raw numbers) and return it formatted
        for reading (:func:`seglib.report.tables.display_table`: no index, 3 significant digits, mean and CI
        in one cell, "—" where nothing applies, the best value per column in bold; ``best`` overrides which
        columns are ranked, ``{column: "max" | "min" | None}``).

        An empty ``df`` is an error, unless ``empty`` says why there is nothing to measure in this
        grid (e.g. no U-Net++ run): then the table is that one note."""
        if not label.startswith("tbl-"):
            raise ValueError(f"table label {label!r} must start with 'tbl-' (Quarto's cross-reference prefix)")
        if df.empty and empty:
            df = pd.DataFrame({"note": [empty]})
        if df.empty:
            raise ValueError(f"table {label} is empty: nothing was measured for it")
        self.tables[label] = df
        from seglib.report.tables import display_table

        return display_table(df, uuid=label, best=best)

    def figure(self, fig, label: str):
        """Save ``fig`` as ``figures/<label>.png`` beside the executed notebook; return the PNG for display.

        The PNG is returned as an ``IPython.display.Image`` so the notebook shows exactly the file that
        was written, whatever matplotlib backend the kernel runs."""
        if not label.startswith("fig-"):
            raise ValueError(f"figure label {label!r} must start with 'fig-' (Quarto's cross-reference prefix)")
        from seglib.plots.style import save

        path = save(fig, self.out_dir / "figures" / f"{label.removeprefix('fig-')}.png")
        self.figures[label] = path
        from IPython.display import Image

        return Image(data=path.read_bytes(), format="png")

    def finish(self, claims: list[dict], headline: dict, summary: pd.DataFrame | None = None,
               metric: str = "Dice"):
        """Write ``results.json``: claims, headline numbers, tables and provenance.

        ``summary`` (columns ``configuration, mean, low, high, seed``: the primary metric per configuration
        with its 95 % CI and the seed's published value, NaN where none) is drawn as the study's figure of
        the report's index page, ``figures/index-summary.png``, and recorded in ``results.json``."""
        tables = {k.removeprefix("tbl-"): v for k, v in self.tables.items()}
        extra = {}
        if summary is not None and not summary.empty:
            from seglib.plots import config_ci_dots
            from seglib.plots.style import save

            fig = config_ci_dots(summary, metric=metric, title=self.title)
            path = save(fig, self.out_dir / "figures" / "index-summary.png")
            extra["index_figure"] = path.relative_to(self.out_dir).as_posix()
            extra["summary"] = {"metric": metric, "rows": [
                {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                for r in summary.to_dict("records")]}
        path = write_outputs(self.out_dir, self.cfg, self.data(), self.grid, tables, claims,
                             headline, self.title, extra=extra)
        log.info("results written to %s", path.parent)
        from IPython.display import Markdown

        return Markdown(f"Results written beside the executed notebook (`{self.cfg.study}/`): {len(tables)} tables, "
                        f"{len(self.figures)} figures, {len(claims)} claims.")


def log_to_stderr(level: int = logging.INFO) -> None:
    """The ``seglib`` logger to stderr at ``level`` (once; a handler already there is kept): a kernel
    started by papermill configures no logging, and the per-epoch lines of ``fit`` should reach
    ``seglib run``'s output."""
    root = logging.getLogger("seglib")
    if not any(getattr(h, "_seglib", False) for h in root.handlers):
        import sys

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        handler._seglib = True
        root.addHandler(handler)
    root.setLevel(level)


def open_study(study: str, profile: str = "quick", overrides: dict | None = None,
               output_dir: str | Path | None = None) -> Session:
    """Start a study notebook: resolve its configuration once, locate the project and the output folder.

    The configuration is ``params/<study>/<profile>.yaml`` with ``overrides`` (``{section: {key: value}}``,
    as papermill injects them from :func:`seglib.report.notebooks.notebook_parameters`, or as a user
    writes them in the parameters cell) merged over it, validated. ``output_dir`` defaults to
    ``build/executed/<study>``. ``seglib``'s INFO lines (one per epoch) go to stderr.
    """
    from seglib.config import resolve

    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of sections, e.g. {{'train': {{'epochs': 3}}}}, or None; "
                        f"got {type(overrides).__name__}: {overrides!r}")
    if "profile" in (overrides or {}):
        raise ValueError("overrides: the profile is the parameter 'profile', not a key of 'overrides'.")
    cfg = resolve(study, {"profile": profile, **(overrides or {})}, source="notebook parameters")
    log_to_stderr()
    p = find_paths()
    out = Path(output_dir) if output_dir else p.results(cfg.study)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.rcParams["figure.dpi"] = 100
    return Session(cfg, p, out)

