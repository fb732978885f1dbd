"""SID quality at a glance: code usage per level, balance, collisions, reconstruction, a semantic sanity check.

``sid_report(...)`` returns a JSON-ready dict; ``write_plots`` draws ``cluster_sizes.png`` (items per code, per
level) and ``projection.png`` (a 2-D map of the items coloured by their first-level code).

Definitions (``n`` items, level ``l`` with ``K_l`` codes; ``p_c`` the share of items with code ``c`` at that level):
* ``used_codes``: codes that at least one item has; ``entropy`` ``-sum p_c log2 p_c`` bits, ``perplexity`` ``2^H``
  (the number of equally used codes it is worth; ``K`` is perfect);
* ``min/median/max_cluster``: items per *used* code; ``gini`` of the items-per-code distribution over all ``K``
  codes (0 = perfectly even);
* ``prefix_*``: the same for the tuple of codes up to this level (how finely the tree splits the catalog);
* ``collisions_before_dedup``: items that share their full code tuple with an earlier item (= how many need a
  non-zero disambiguation digit); ``largest_collision_group``;
* ``recon_error``: mean over items of ``||x - x_hat|| / ||x||``; ``recon_error_global`` is
  ``sqrt(sum ||x - x_hat||^2 / sum ||x||^2)``; per level the same after decoding the first ``l+1`` levels;
* ``semantic``: mean Jaccard overlap of title word sets for random pairs of items that share a first-level code
  (and the first two codes) against random pairs; ``lift`` = same-code / random.
"""

from __future__ import annotations

import re

import numpy as np

from llmrec.tokenizers.dedup import collision_stats

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and the of for with in on to by oz ml fl pack count ounce inch set x 1 2 3 4 5 6 8 10 12".split())


def gini(sizes: np.ndarray) -> float:
    s = np.sort(np.asarray(sizes, np.float64))
    n = len(s)
    if n == 0 or s.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ s / (n * s.sum()))


def _usage(labels: np.ndarray, k: int) -> dict:
    cnt = np.bincount(labels, minlength=k) if k else np.bincount(labels)
    used = cnt[cnt > 0]
    p = used / used.sum()
    h = float(-(p * np.log2(p)).sum())
    return {"codebook_size": int(k), "used_codes": int(len(used)), "utilisation": round(len(used) / max(k, 1), 4),
            "entropy_bits": round(h, 4), "perplexity": round(2 ** h, 2),
            "min_cluster": int(used.min()), "median_cluster": float(np.median(used)), "max_cluster": int(used.max()),
            "gini": round(gini(cnt), 4)}


def level_stats(codes: np.ndarray, codebook_sizes: list[int]) -> list[dict]:
    out = []
    for l in range(codes.shape[1]):
        st = {"level": l, **_usage(codes[:, l], codebook_sizes[l])}
        _, inv = np.unique(codes[:, : l + 1], axis=0, return_inverse=True)
        pre = np.bincount(inv.reshape(-1))
        st.update({"prefixes": int(len(pre)), "prefix_max_items": int(pre.max()),
                   "prefix_median_items": float(np.median(pre))})
        out.append(st)
    return out


def recon_errors(x: np.ndarray, x_hat: np.ndarray) -> dict:
    err = np.linalg.norm(x - x_hat, axis=1)
    nrm = np.linalg.norm(x, axis=1)
    ok = nrm > 0
    if not ok.any():  # all-zero embeddings: nothing to reconstruct
        return {"recon_error": 0.0, "recon_error_global": 0.0}
    return {"recon_error": round(float((err[ok] / nrm[ok]).mean()), 5),
            "recon_error_global": round(float(np.sqrt((err ** 2).sum() / max((nrm ** 2).sum(), 1e-30))), 5)}


def _words(title: str) -> frozenset:
    return frozenset(w for w in _WORD.findall(str(title).lower()) if w not in _STOP and len(w) > 1)


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def semantic_overlap(titles, codes: np.ndarray, n_pairs: int = 20000, seed: int = 0) -> dict | None:
    """Title word overlap (Jaccard) of items sharing the first (two) code(s) vs random pairs."""
    if titles is None:
        return None
    words = [_words(t) for t in titles]
    if sum(1 for w in words if w) < 2:
        return None
    rng = np.random.default_rng(seed)
    n = len(words)

    def same_prefix_pairs(depth):
        _, inv = np.unique(codes[:, :depth], axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        order = np.argsort(inv, kind="stable")
        g = inv[order]
        starts = np.searchsorted(g, g, side="left")
        ends = np.searchsorted(g, g, side="right")
        size = ends - starts
        ok = np.flatnonzero(size > 1)
        if not len(ok):
            return None
        i = rng.choice(ok, n_pairs)
        # partner: another member of the same group, uniformly
        off = rng.integers(1, size[i])
        j = starts[i] + (i - starts[i] + off) % size[i]
        return order[i], order[j]

    def mean_j(a, b):
        return float(np.mean([_jaccard(words[p], words[q]) for p, q in zip(a, b)]))

    ra = rng.integers(n, size=n_pairs)
    rb = (ra + rng.integers(1, n, size=n_pairs)) % n
    out = {"pairs": n_pairs, "random_pairs": round(mean_j(ra, rb), 4)}
    for depth, name in ((1, "same_first_code"), (2, "same_first_two_codes")):
        if codes.shape[1] >= depth:
            pr = same_prefix_pairs(depth)
            if pr is not None:
                out[name] = round(mean_j(*pr), 4)
    if out["random_pairs"] > 0 and "same_first_code" in out:
        out["lift_first_code"] = round(out["same_first_code"] / out["random_pairs"], 2)
    return out


def sid_report(codes_raw: np.ndarray, codes_final: np.ndarray, codebook_sizes: list[int],
               x: np.ndarray | None = None, x_hat_levels: list[np.ndarray] | None = None, titles=None,
               seed: int = 0) -> dict:
    """The report dict. ``codes_raw`` before dedup ``[n, L]``, ``codes_final`` after ``[n, L(+1)]`` (rows =
    items 1..n); ``x_hat_levels[l]`` the reconstruction from levels ``0..l``."""
    before = collision_stats(codes_raw)
    after = collision_stats(codes_final)
    rep = {
        "n_items": int(len(codes_final)),
        "n_unique_sids": after["n_unique"],
        "n_unique_before_dedup": before["n_unique"],
        "collisions_before_dedup": before["collisions"],
        "items_in_collision_groups": before["items_in_collisions"],
        "largest_collision_group": before["largest_group"],
        "levels": level_stats(codes_final, list(codebook_sizes) + [int(codes_final[:, -1].max()) + 1]
                              * (codes_final.shape[1] - len(codebook_sizes))),
    }
    rep["levels"] = rep["levels"][: codes_final.shape[1]]
    if x is not None:
        _, inv, cnt = np.unique(x, axis=0, return_inverse=True, return_counts=True)
        rep["identical_embeddings"] = int(cnt[cnt > 1].sum())
    if x is not None and x_hat_levels:
        rep.update(recon_errors(x, x_hat_levels[-1]))
        for l, xh in enumerate(x_hat_levels):
            if l < len(rep["levels"]):
                rep["levels"][l].update({f"{k}_after_level": v for k, v in recon_errors(x, xh).items()})
    else:
        rep["recon_error"] = None
    sem = semantic_overlap(titles, codes_raw, seed=seed) if titles is not None else None
    if sem is not None:
        rep["semantic"] = sem
    return rep


def format_report(rep: dict) -> str:
    """A terminal table of the report."""
    lines = [f"items {rep['n_items']:,}  unique SIDs {rep['n_unique_sids']:,}  "
             f"collisions before dedup {rep['collisions_before_dedup']:,} "
             f"(largest group {rep.get('largest_collision_group', '?')})"]
    if rep.get("recon_error") is not None:
        lines.append(f"reconstruction error ||x - x_hat|| / ||x||: {rep['recon_error']:.4f} "
                     f"(global {rep.get('recon_error_global', float('nan')):.4f})")
    if "identical_embeddings" in rep:
        lines.append(f"items with an identical embedding: {rep['identical_embeddings']:,}")
    hdr = f"{'level':>5} {'K':>6} {'used':>6} {'util':>6} {'perplex':>8} {'min':>5} {'median':>7} {'max':>6} " \
          f"{'gini':>6} {'prefixes':>9} {'err':>7}"
    lines += ["", hdr, "-" * len(hdr)]
    for s in rep["levels"]:
        err = s.get("recon_error_after_level")
        lines.append(f"{s['level']:>5} {s['codebook_size']:>6} {s['used_codes']:>6} {s['utilisation']:>6.1%} "
                     f"{s['perplexity']:>8.1f} {s['min_cluster']:>5} {s['median_cluster']:>7.1f} "
                     f"{s['max_cluster']:>6} {s['gini']:>6.3f} {s['prefixes']:>9,} "
                     f"{'' if err is None else f'{err:.4f}':>7}")
    sem = rep.get("semantic")
    if sem:
        lines += ["", f"title word overlap (Jaccard): same first code {sem.get('same_first_code', float('nan')):.4f}, "
                      f"same first two codes {sem.get('same_first_two_codes', float('nan')):.4f}, "
                      f"random pairs {sem['random_pairs']:.4f} (lift {sem.get('lift_first_code', float('nan'))}x)"]
    if rep.get("dedup"):
        lines.append(f"dedup: {rep['dedup']}")
    return "\n".join(lines)


# --- plots ---------------------------------------------------------------------------------------------------
def write_plots(folder, codes: np.ndarray, codebook_sizes: list[int], x: np.ndarray | None = None,
                titles=None, title: str = "", seed: int = 0, max_points: int = 6000) -> list[str]:
    """``cluster_sizes.png`` and (with embeddings) ``projection.png`` in ``folder``; returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path

    folder = Path(folder)
    written = []
    L = codes.shape[1]
    fig, axes = plt.subplots(1, L, figsize=(3.2 * L, 2.8), squeeze=False)
    for l in range(L):
        ax = axes[0, l]
        k = codebook_sizes[l] if l < len(codebook_sizes) else int(codes[:, l].max()) + 1
        cnt = np.bincount(codes[:, l], minlength=k)
        ax.hist(cnt, bins=min(40, max(5, int(cnt.max()) + 1)), color="#3b75af", edgecolor="white", linewidth=0.4)
        ax.axvline(len(codes) / k, color="#d62728", lw=1, ls="--", label=f"n/K = {len(codes) / k:.1f}")
        used = int((cnt > 0).sum())
        ax.set_title(f"level {l}: {used}/{k} codes used, gini {gini(cnt):.2f}", fontsize=8)
        ax.set_xlabel("items per code", fontsize=8)
        if l == 0:
            ax.set_ylabel("codes", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "cluster_sizes.png", dpi=110)
    plt.close(fig)
    written.append("cluster_sizes.png")

    if x is not None and len(x) >= 3:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(x), min(len(x), max_points), replace=False))
        xs = x[idx] - x[idx].mean(0)
        # PCA from the d x d covariance: fast, deterministic, no extra dependency
        w, v = np.linalg.eigh(xs.T.astype(np.float64) @ xs)
        p = xs @ v[:, ::-1][:, :2].astype(np.float32)
        c0 = codes[idx, 0]
        top = np.argsort(-np.bincount(codes[:, 0]))[:10]
        fig, ax = plt.subplots(figsize=(6.4, 5.0))
        ax.scatter(p[:, 0], p[:, 1], s=2, c="#cccccc", lw=0, label="other codes", rasterized=True)
        cmap = plt.get_cmap("tab10")
        for j, code in enumerate(top):
            m = c0 == code
            lab = f"<a_{code}>"
            if titles is not None:
                members = np.flatnonzero(codes[:, 0] == code)
                tw = _common_words(titles, members)
                if tw:
                    lab += f" {tw}"
            ax.scatter(p[m, 0], p[m, 1], s=5, color=cmap(j), lw=0, label=lab, rasterized=True)
        ax.set_xlabel("PC 1", fontsize=8)
        ax.set_ylabel("PC 2", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title((title + ": " if title else "") + "items by first-level code (10 largest coloured; PCA)",
                     fontsize=9)
        ax.legend(fontsize=6.5, markerscale=2.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        fig.savefig(folder / "projection.png", dpi=110)
        plt.close(fig)
        written.append("projection.png")
    return written


def _common_words(titles, members: np.ndarray, n: int = 3) -> str:
    from collections import Counter

    cnt = Counter()
    for i in members:
        cnt.update(_words(titles[i]))
    return " ".join(w for w, _ in cnt.most_common(n))
