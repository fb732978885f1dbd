"""``llmrec baseline train``: fit a model on a split's training data, select on validation, report test.

Every baseline is a function ``fit(split, config: dict, out: Path, seed: int) -> scorer`` returning a
full-ranking score function (see :func:`llmrec.eval.evaluate_scores`), or a dict with ``"valid"`` and
``"test"`` :class:`~llmrec.eval.EvalResult` (plus ``"info"``: training budget, throughput) for the models trained
with :mod:`llmrec.training.loop`, which select their checkpoint on validation themselves. A ``fit`` that accepts
``ks`` / ``exclude_history`` keywords gets the evaluation options too. The registry maps names to
``module:function`` so heavy models import only when asked for.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

import yaml

from llmrec.artifacts import atomic_dir, make_manifest, read_yaml_mapping, sha256_file, write_json
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

REGISTRY: dict[str, str] = {
    "pop": "llmrec.models.floors:fit_pop",
    "itemknn": "llmrec.models.floors:fit_itemknn",
    "sasrec": "llmrec.models.sasrec:fit",
    "gpt2": "llmrec.models.gpt2:fit",
    "hstu": "llmrec.models.hstu:fit",
    "hstu-sid": "llmrec.models.hstu_sid:fit",
    "tiger": "llmrec.models.tiger:fit",
}


def load_config(path: str | Path | None) -> dict:
    if not path:
        return {}
    return read_yaml_mapping(path, "config file")[0]


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["lr=0.0005", "loss=bce"]`` -> ``{"lr": 0.0005, "loss": "bce"}`` (values parsed as YAML scalars)."""
    out = {}
    for p in pairs or []:
        key, sep, val = p.partition("=")
        if not sep or not key.strip():
            raise LlmrecError(f"--set {p!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise LlmrecError(f"--set {p!r}: value is not valid YAML ({e})") from None
    return out


def train_baseline(model: str, data: str | Path, split: str = "loo", config: dict | None = None,
                   out: str | Path | None = None, seed: int = 0, ks=None, exclude_history: bool = False,
                   overwrite: bool = False, resume: bool = False) -> dict:
    """Fit ``model``, evaluate on validation and test, write ``out`` (metrics.json = test metrics).

    Trained models write their checkpoints to ``.OUT.work/`` while training; ``resume=True`` continues an
    interrupted run from there. ``metrics.json`` also carries ``by_popularity``: the test metrics of the examples
    whose target is a hot (top 25% by training count), middle or cold (bottom 25%) item."""
    import inspect
    import shutil

    from llmrec.data_builders.splits import load_split
    from llmrec.eval import evaluate_scores, metrics_by_bin, parse_ks, popularity_bins

    if model not in REGISTRY:
        raise LlmrecError(f"unknown model {model!r}; expected one of {', '.join(REGISTRY)}")
    ks = parse_ks(ks)
    config = dict(config or {})
    resume = resume or bool(config.pop("resume", False))
    sp = load_split(data, split)
    mod, fn = REGISTRY[model].split(":")
    fit = getattr(importlib.import_module(mod), fn)
    out = Path(out) if out else None
    if out is not None and out.exists() and not overwrite:
        raise LlmrecError(f"{out}: output folder already exists (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    work = out.with_name(f".{out.name}.work") if out is not None else None
    if work is not None:
        if work.exists() and not resume:
            if any(work.iterdir()) and not overwrite:
                raise LlmrecError(f"{work}: an interrupted run of this output is there; pass --resume to continue "
                                  "it or --overwrite to start over")
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
    params = inspect.signature(fit).parameters
    kw = {k: v for k, v in (("ks", ks), ("exclude_history", exclude_history)) if k in params}
    if "resume" in config or resume:
        config["resume"] = resume
    fitted = fit(sp, config, work, seed, **kw)
    config.pop("resume", None)
    t_fit = time.perf_counter() - t0
    if isinstance(fitted, dict):
        res = fitted
    else:
        res = {part: evaluate_scores(fitted, sp.examples(part), sp.n_items, ks=ks, exclude_history=exclude_history,
                                     desc=f"{model} {part}") for part in ("valid", "test")}
    t_total = time.perf_counter() - t0
    bins = popularity_bins(sp.train["item"].to_numpy(), sp.n_items)
    by_pop = metrics_by_bin(res["test"], bins)
    test_metrics = {**res["test"].metrics, "by_popularity": by_pop}
    info = res.get("info") or {}
    summary = {"model": model, "split": split, "test": test_metrics, "valid": res["valid"].metrics,
               "fit_seconds": round(t_fit, 2), "total_seconds": round(t_total, 2), "info": info}
    if out is not None:
        with atomic_dir(out, overwrite=True) as tmp:
            write_json(tmp / "metrics.json", test_metrics)
            write_json(tmp / "valid_metrics.json", {**res["valid"].metrics,
                                                    "by_popularity": metrics_by_bin(res["valid"], bins)})
            res["test"].per_user.to_parquet(tmp / "per_user_test.parquet", index=False)
            for f in work.iterdir():
                f.rename(tmp / f.name)
            write_json(tmp / "run.json", make_manifest(
                "baseline", config={"model": model, "split": split, **config, "ks": list(ks),
                                    "exclude_history": exclude_history},
                seed=seed, inputs={str(sp.path / "train.parquet"): sha256_file(sp.path / "train.parquet")},
                dataset=str(data), timings={"fit_s": round(t_fit, 2), "total_s": round(t_total, 2)},
                **({"extra": info} if info else {})))
        work.rmdir()
    return summary
