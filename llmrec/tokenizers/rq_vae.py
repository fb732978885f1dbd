"""RQ-VAE (TIGER): an MLP encoder, a residual vector quantiser, an MLP decoder, trained end to end.

``x [d] -> encoder -> z [e] -> L codebooks (K x e), residual by residual -> z_q = sum_l q_l -> decoder -> x_hat``

Training loss: ``||x - x_hat||^2`` + per level ``||sg(r_l) - q_l||^2 + beta ||r_l - sg(q_l)||^2`` (codebook and
commitment terms; straight-through gradients to the encoder). What keeps the codebooks alive:

* k-means initialisation: the codebooks start as residual k-means (``llmrec.tokenizers.kmeans``) of the
  encoder's latents after a short warm-up of the autoencoder alone;
* dead-code restarts: after every epoch, codes that no item chose are re-seeded with random residuals of that
  level (TIGER and many RVQ codecs do this);
* optional Sinkhorn-balanced last level (LC-Rec): the last level's assignment is the argmax of a Sinkhorn
  transport plan with uniform code marginals, which spreads items over codes and removes most collisions.

Runs on CPU (a 12k-item catalog trains in minutes) or on a GPU when present (``device``).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)


def _torch():
    import torch
    return torch


def _mlp(dims: list[int], dropout: float = 0.0):
    nn = _torch().nn
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def sinkhorn_codes(dist, epsilon: float = 0.003, iters: int = 50):
    """Balanced assignment: argmax of the entropic transport plan between items (mass 1 each) and codes
    (mass n/K each) for cost ``dist [n, K]`` (normalised to [0, 1]); torch tensors in and out."""
    torch = _torch()
    d = dist.double()
    d = (d - d.min()) / (d.max() - d.min() + 1e-12)
    n, k = d.shape
    log_q = -d / epsilon
    log_a = torch.full((n,), -math.log(n), dtype=d.dtype, device=d.device)
    log_b = torch.full((k,), -math.log(k), dtype=d.dtype, device=d.device)
    u = torch.zeros(n, dtype=d.dtype, device=d.device)
    v = torch.zeros(k, dtype=d.dtype, device=d.device)
    for _ in range(iters):
        u = log_a - torch.logsumexp(log_q + v[None, :], dim=1)
        v = log_b - torch.logsumexp(log_q + u[:, None], dim=0)
    return (log_q + u[:, None] + v[None, :]).argmax(1)


class RQVAE:
    """``RQVAE(levels=3, codes=256).fit(x)`` -> codes ``[n, 3]``. See the module docstring."""

    def __init__(self, method: str = "rq-vae", levels: int = 3, codes=256, seed: int = 0,
                 hidden: tuple = (512, 256, 128), latent_dim: int = 32, beta: float = 0.25, epochs: int = 300,
                 batch_size: int = 1024, lr: float = 1e-3, weight_decay: float = 0.0, warmup_epochs: int = 20,
                 dead_code_restart: bool = True, sinkhorn: bool = False, sinkhorn_epsilon: float = 0.003,
                 sinkhorn_iters: int = 50, dropout: float = 0.0, device: str | None = None,
                 time_budget_s: float | None = None):
        if levels < 1:
            raise LlmrecError(f"--levels must be >= 1, got {levels}")
        ks = [int(codes)] * levels if np.isscalar(codes) else [int(c) for c in codes]
        if len(ks) != levels:
            raise LlmrecError(f"--codes must be one K or one per level ({levels}), got {codes!r}")
        self.method, self.levels, self.codebook_sizes, self.codes = method, int(levels), ks, ks[0]
        self.seed, self.hidden, self.latent_dim, self.beta = int(seed), list(hidden), int(latent_dim), float(beta)
        self.epochs, self.batch_size, self.lr, self.weight_decay = int(epochs), int(batch_size), float(lr), \
            float(weight_decay)
        self.warmup_epochs, self.dead_code_restart = int(warmup_epochs), bool(dead_code_restart)
        self.sinkhorn, self.sinkhorn_epsilon, self.sinkhorn_iters = bool(sinkhorn), float(sinkhorn_epsilon), \
            int(sinkhorn_iters)
        self.dropout = float(dropout)
        self.device = device
        self.time_budget_s = time_budget_s
        self.dim: int | None = None
        self.encoder = self.decoder = None
        self.codebooks = None
        self.fit_stats: list[dict] = []
        self.history: list[dict] = []

    # --- interface ------------------------------------------------------------------------------------------
    def config(self) -> dict:
        return {"levels": self.levels, "codes": self.codebook_sizes, "seed": self.seed, "hidden": self.hidden,
                "latent_dim": self.latent_dim, "beta": self.beta, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
                "warmup_epochs": self.warmup_epochs, "dead_code_restart": self.dead_code_restart,
                "sinkhorn": self.sinkhorn, "sinkhorn_epsilon": self.sinkhorn_epsilon,
                "sinkhorn_iters": self.sinkhorn_iters, "dropout": self.dropout, "dim": self.dim,
                "time_budget_s": self.time_budget_s}

    def _build(self, dim: int):
        torch = _torch()
        self.dim = dim
        torch.manual_seed(self.seed)
        self.encoder = _mlp([dim, *self.hidden, self.latent_dim], self.dropout)
        self.decoder = _mlp([self.latent_dim, *self.hidden[::-1], dim], self.dropout)
        self.codebooks = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(k, self.latent_dim) * 0.01) for k in self.codebook_sizes])

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"encoder.{k}": v.detach().cpu().numpy() for k, v in self.encoder.state_dict().items()}
        out.update({f"decoder.{k}": v.detach().cpu().numpy() for k, v in self.decoder.state_dict().items()})
        out.update({f"codebook.{l}": c.detach().cpu().numpy() for l, c in enumerate(self.codebooks)})
        return out

    @classmethod
    def from_tensors(cls, method: str, config: dict, tensors: dict) -> "RQVAE":
        torch = _torch()
        cfg = {k: v for k, v in config.items() if k != "dim"}
        tok = cls(method=method, **cfg)
        tok._build(int(config["dim"]))
        tok.encoder.load_state_dict({k[8:]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                                     if k.startswith("encoder.")})
        tok.decoder.load_state_dict({k[8:]: torch.from_numpy(np.array(v)) for k, v in tensors.items()
                                     if k.startswith("decoder.")})
        with torch.no_grad():
            for l, c in enumerate(tok.codebooks):
                c.copy_(torch.from_numpy(np.array(tensors[f"codebook.{l}"])))
        tok.device = "cpu"
        return tok

    # --- quantisation ---------------------------------------------------------------------------------------
    def _quantize(self, z, balanced_last: bool = False, codes=None, upto: int | None = None):
        """Residual quantisation of latents ``z``. Returns ``(z_q, codes [n, L], codebook_loss, commit_loss)``."""
        torch = _torch()
        r = z
        zq = torch.zeros_like(z)
        out = []
        cb_loss = z.new_zeros(())
        cm_loss = z.new_zeros(())
        L = self.levels if upto is None else upto + 1
        for l in range(L):
            c = self.codebooks[l]
            if codes is not None:
                idx = codes[:, l]
            else:
                d = (r.detach().pow(2).sum(1, keepdim=True) - 2 * r.detach() @ c.detach().T
                     + c.detach().pow(2).sum(1)[None, :])
                if balanced_last and l == self.levels - 1 and len(r) > 1:
                    idx = sinkhorn_codes(d, self.sinkhorn_epsilon, self.sinkhorn_iters)
                else:
                    idx = d.argmin(1)
            q = c[idx]
            cb_loss = cb_loss + (r.detach() - q).pow(2).sum(1).mean()
            cm_loss = cm_loss + (r - q.detach()).pow(2).sum(1).mean()
            zq = zq + q
            r = r - q.detach()
            out.append(idx)
        return zq, torch.stack(out, 1), cb_loss, cm_loss

    def _latents(self, x: np.ndarray, batch: int = 8192):
        torch = _torch()
        dev = self._dev()
        self.encoder.eval()
        with torch.no_grad():
            return torch.cat([self.encoder(torch.from_numpy(x[s: s + batch]).to(dev))
                              for s in range(0, len(x), batch)])

    def _dev(self) -> str:
        torch = _torch()
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    # --- training -------------------------------------------------------------------------------------------
    def fit(self, x: np.ndarray) -> np.ndarray:
        from llmrec.tokenizers.kmeans import kmeans

        torch = _torch()
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise LlmrecError(f"embeddings must be a non-empty [n, dim] array, got shape {x.shape}")
        t0 = time.perf_counter()
        self._build(x.shape[1])
        dev = self._dev()
        self.encoder.to(dev), self.decoder.to(dev), self.codebooks.to(dev)
        xt = torch.from_numpy(x).to(dev)
        n = len(x)
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        bs = min(self.batch_size, n)

        def batches():
            perm = torch.randperm(n, generator=g).to(dev)
            for s in range(0, n, bs):
                yield xt[perm[s: s + bs]]

        # 1) autoencoder warm-up, so k-means sees meaningful latents
        for ep in range(self.warmup_epochs):
            self.encoder.train(), self.decoder.train()
            for xb in batches():
                loss = (self.decoder(self.encoder(xb)) - xb).pow(2).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        # 2) k-means init of every level on the latents' residuals
        z = self._latents(x).cpu().numpy()
        r = z.copy()
        with torch.no_grad():
            for l, k in enumerate(self.codebook_sizes):
                res = kmeans(r, k, seed=self.seed + l, max_iter=30)
                self.codebooks[l].copy_(torch.from_numpy(res.centroids).to(dev))
                r -= res.centroids[res.labels]
        # 3) joint training
        opt = torch.optim.AdamW([*params, *self.codebooks.parameters()], lr=self.lr, weight_decay=self.weight_decay)
        restarts = 0
        ep = 0
        for ep in range(self.epochs):
            self.encoder.train(), self.decoder.train()
            used = [torch.zeros(k, dtype=torch.bool, device=dev) for k in self.codebook_sizes]
            tot = {"loss": 0.0, "recon": 0.0, "commit": 0.0}
            nb = 0
            for xb in batches():
                z = self.encoder(xb)
                zq, idx, cb, cm = self._quantize(z, balanced_last=self.sinkhorn)
                zq_st = z + (zq - z).detach()
                xh = self.decoder(zq_st)
                rec = (xh - xb).pow(2).sum(1).mean()
                loss = rec + cb + self.beta * cm
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for l in range(self.levels):
                    used[l][idx[:, l]] = True
                tot["loss"] += float(loss.detach())
                tot["recon"] += float(rec.detach())
                tot["commit"] += float(cm.detach())
                nb += 1
            if self.dead_code_restart and ep < self.epochs - 1:
                restarts += self._restart_dead(x, used)
            rec_epoch = {k: v / nb for k, v in tot.items()}
            rec_epoch["epoch"] = ep
            if ep % 10 == 0 or ep == self.epochs - 1:
                self.history.append(rec_epoch)
            if self.time_budget_s and time.perf_counter() - t0 > self.time_budget_s:
                log.warning("rq-vae: time budget %.0f s reached after %d epochs", self.time_budget_s, ep + 1)
                break
        self.encoder.eval(), self.decoder.eval()
        codes = self._encode(x, balanced_last=self.sinkhorn)
        self.fit_stats = [{"epochs": ep + 1, "warmup_epochs": self.warmup_epochs, "dead_code_restarts": restarts,
                           "seconds": round(time.perf_counter() - t0, 2), "device": dev,
                           "final": self.history[-1] if self.history else None}]
        self.to_cpu()
        return codes

    def to_cpu(self):
        self.encoder.cpu(), self.decoder.cpu(), self.codebooks.cpu()
        self.device = "cpu"

    def _restart_dead(self, x: np.ndarray, used) -> int:
        """Re-seed unused codes with random residuals of their level (from the current model)."""
        torch = _torch()
        dead = [(~u).nonzero().flatten() for u in used]
        n_dead = sum(len(d) for d in dead)
        if not n_dead:
            return 0
        with torch.no_grad():
            z = self._latents(x)
            r = z
            gen = torch.Generator(device="cpu").manual_seed(self.seed + len(self.history) + n_dead)
            for l in range(self.levels):
                c = self.codebooks[l]
                idx = (r.pow(2).sum(1, keepdim=True) - 2 * r @ c.T + c.pow(2).sum(1)[None]).argmin(1)
                if len(dead[l]):
                    pick = torch.randint(len(r), (len(dead[l]),), generator=gen).to(r.device)
                    c[dead[l]] = r[pick] + 1e-3 * torch.randn(len(pick), r.shape[1], generator=gen).to(r.device)
                r = r - c[idx]
        return n_dead

    # --- inference ------------------------------------------------------------------------------------------
    def _encode(self, x: np.ndarray, balanced_last: bool = False) -> np.ndarray:
        torch = _torch()
        with torch.no_grad():
            z = self._latents(np.ascontiguousarray(x, dtype=np.float32))
            return self._quantize(z, balanced_last=balanced_last)[1].cpu().numpy().astype(np.int64)

    def _check_fitted(self):
        if self.encoder is None:
            raise LlmrecError("the tokenizer is not fitted: call fit(x) or load a SID folder")

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of new items (plain nearest codes at every level; Sinkhorn balancing is a fit-time choice)."""
        self._check_fitted()
        return self._encode(x)

    def decode_prefix(self, codes: np.ndarray, upto: int) -> np.ndarray:
        torch = _torch()
        self._check_fitted()
        dev = self._dev()
        with torch.no_grad():
            c = torch.from_numpy(np.asarray(codes, np.int64)).to(dev)
            zq = sum(self.codebooks[l][c[:, l]] for l in range(upto + 1))
            self.decoder.eval()
            return self.decoder(zq).cpu().numpy()

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.decode_prefix(codes, self.levels - 1)

    def last_level_distances(self, x: np.ndarray, codes: np.ndarray) -> np.ndarray:
        torch = _torch()
        self._check_fitted()
        with torch.no_grad():
            z = self._latents(np.ascontiguousarray(x, dtype=np.float32))
            c = torch.from_numpy(np.asarray(codes, np.int64)).to(z.device)
            r = z - sum((self.codebooks[l][c[:, l]] for l in range(self.levels - 1)), torch.zeros_like(z))
            cb = self.codebooks[-1]
            return (r.pow(2).sum(1, keepdim=True) - 2 * r @ cb.T + cb.pow(2).sum(1)[None]).clamp_min(0).cpu().numpy()
