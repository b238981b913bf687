"""Fusion blocks over per-modality vectors: ARGF's graph fusion network and the
alternatives of its Table 6, plus the decision network (Mai et al., AAAI 2020).

Graph fusion network (GFN, Sec. "Graph Fusion Network", Eq. 10-16), for three modality
vectors V_m of width k (ARGF's encoded representations):

  Eq. 10  alpha_m = sigmoid(W V_m + b) (modality attention network, shared over m);
          U = 1/3 sum_m alpha_m V_m
  Eq. 11  V_ij = MLP(V_i (+) V_j): Dense -> LeakyReLU -> Dense(k) -> tanh
  Eq. 12  S_ij = softmax(V_i) . softmax(V_j)                         (`similarity`)
  Eq. 13  a^_ij = (alpha_i + alpha_j) / (S_ij + 0.5)                  (`vertex_logits`)
  Eq. 14  alpha_ij = softmax over the three bimodal vertices of a^_ij
  Eq. 15  B = sum alpha_ij V_ij                                       (`weighted_vertices`)
  trimodal layer: six vertices, MLP' of each two bimodal vertices (3) and of each bimodal
          vertex with the unimodal vertex it does not contain (3), weighted as in Eq. 13-14
          with the bimodal weights alpha_ij and unimodal weights alpha_m; T = sum alpha V
  output  Omega = U (+) B (+) T (3k).

Eq. 11 writes one Theta_MLP for every pair and the trimodal layer "the same MLP network
(but the parameters are not shared)" with the bimodal one: by default one MLP is shared by
the three bimodal vertices and another by the six trimodal ones (`share_mlp=True`);
`share_mlp=False` gives each vertex its own MLP.

edges='reference' computes what the public code's graph11_new computes (the paper leaves the
trimodal layer's "same weight computing method" open): each bimodal vertex is forwarded as
ELU(alpha_ij V_ij) and B is their sum; a trimodal vertex's weight uses the bimodal scores
a^_ij before their softmax (similarities still from the unweighted V_ij); its vector is
ELU(alpha' MLP'(.)) of the forwarded vertices, T their sum; the bimodal x bimodal vertices
are (01, 12), (01, 02), (12, 02) in its order, which is the public code's with the
modalities ordered audio, vision, text.

`tensor_fusion` is TFN's Eq. 1 (the TFN model and ARGF's Table 6 'tensor' alternative).
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax.layers.dropout import Dropout


def similarity(v_i: jnp.ndarray, v_j: jnp.ndarray) -> jnp.ndarray:
  """Eq. 12: S_ij = softmax(V_i)^T softmax(V_j), softmax over the feature axis; (B,)."""
  return (jax.nn.softmax(v_i, axis=-1) * jax.nn.softmax(v_j, axis=-1)).sum(-1)


def vertex_logits(w_i, w_j, v_i, v_j, offset: float = 0.5) -> jnp.ndarray:
  """Eq. 13: (w_i + w_j) / (S_ij + offset), the unnormalised weight of the vertex fused
  from vertices i and j (w: their weights (B,), v: their vectors (B, k))."""
  return (w_i + w_j) / (similarity(v_i, v_j) + offset)


def weighted_vertices(logits: jnp.ndarray, vertices: jnp.ndarray):
  """Eq. 14-15: alpha = softmax(logits) over the P vertices; returns (sum_p alpha_p V_p
  (B, k), alpha (B, P)). logits (B, P), vertices (B, P, k)."""
  alpha = jax.nn.softmax(logits, axis=-1)
  return (alpha[..., None] * vertices).sum(1), alpha


class FusionMLP(nn.Module):
  """Eq. 11's MLP: two dense layers with LeakyReLU and tanh."""
  features: int
  hidden: int
  leaky_slope: float = 0.2

  @nn.compact
  def __call__(self, x):
    x = nn.leaky_relu(nn.Dense(self.hidden, name="dense_0")(x), self.leaky_slope)
    return jnp.tanh(nn.Dense(self.features, name="dense_1")(x))


class ModalityAttention(nn.Module):
  """Eq. 10's MAN: a sigmoid-activated dense layer R^k -> R^1 shared over modalities."""

  @nn.compact
  def __call__(self, vs: list[jnp.ndarray]) -> jnp.ndarray:
    dense = nn.Dense(1, name="dense")
    return jnp.stack([jax.nn.sigmoid(dense(v))[:, 0] for v in vs], axis=1)  # (B, M)


class GraphFusion(nn.Module):
  """GFN over exactly three (B, k) vectors; returns (Omega (B, 3k), aux).

  aux: 'unimodal' (B, 3) alpha_m, 'bimodal' (B, 3) alpha_ij, 'trimodal' (B, 6) and U, B, T
  (the weights are the columns of the paper's Fig. 6; `vertex_names` names them).
  """
  hidden: int = 50
  share_mlp: bool = True
  leaky_slope: float = 0.2
  offset: float = 0.5
  modalities: tuple[str, ...] | None = None  # vertex order; None: the dict's order (note
                                             # that jax transforms sort dict keys)
  edges: str = "paper"                       # or 'reference' (the module docstring)

  @nn.compact
  def __call__(self, vs: dict[str, jnp.ndarray]):
    names = list(self.modalities or vs)
    if len(names) != 3:
      raise ValueError(f"graph fusion needs exactly 3 modalities, got {names}")
    v = [vs[m] for m in names]
    k = v[0].shape[-1]
    alpha = ModalityAttention(name="attention")(v)                        # (B, 3)
    u = (alpha[..., None] * jnp.stack(v, axis=1)).sum(1) / 3.0            # Eq. 10

    def mlps(layer: str, n: int) -> list[FusionMLP]:
      if self.share_mlp:
        return [FusionMLP(k, self.hidden, self.leaky_slope, name=f"{layer}_mlp")] * n
      return [FusionMLP(k, self.hidden, self.leaky_slope, name=f"{layer}_mlp_{i}")
              for i in range(n)]
    bi_mlp, tri_mlp = mlps("bimodal", 3), mlps("trimodal", 6)

    if self.edges not in ("paper", "reference"):
      raise ValueError(f"graph fusion edges must be paper or reference, got {self.edges!r}")
    reference = self.edges == "reference"
    pairs = list(itertools.combinations(range(3), 2))                    # (0,1) (0,2) (1,2)
    bi = [bi_mlp[p](jnp.concatenate([v[i], v[j]], -1))
          for p, (i, j) in enumerate(pairs)]                              # Eq. 11
    bi_logits = jnp.stack([vertex_logits(alpha[:, i], alpha[:, j], v[i], v[j], self.offset)
                           for i, j in pairs], axis=1)                    # Eq. 12-13
    b, bi_alpha = weighted_vertices(bi_logits, jnp.stack(bi, axis=1))     # Eq. 14-15
    bi_score, bi_out = bi_alpha, bi                # what the trimodal layer weights / fuses
    if reference:
      bi_score = bi_logits
      bi_out = [jax.nn.elu(bi_alpha[:, p, None] * bi[p]) for p in range(3)]
      b = sum(bi_out)

    tri, tri_logits = [], []
    for p, (x, y) in enumerate(_bimodal_pairs(self.edges)):               # bimodal x bimodal
      tri.append(tri_mlp[p](jnp.concatenate([bi_out[x], bi_out[y]], -1)))
      tri_logits.append(vertex_logits(bi_score[:, x], bi_score[:, y], bi[x], bi[y],
                                      self.offset))
    for p, (i, j) in enumerate(pairs):                                    # bimodal x unimodal
      o = ({0, 1, 2} - {i, j}).pop()
      tri.append(tri_mlp[3 + p](jnp.concatenate([bi_out[p], v[o]], -1)))
      tri_logits.append(vertex_logits(bi_score[:, p], alpha[:, o], bi[p], v[o], self.offset))
    t, tri_alpha = weighted_vertices(jnp.stack(tri_logits, axis=1), jnp.stack(tri, axis=1))
    if reference:
      t = sum(jax.nn.elu(tri_alpha[:, p, None] * tri[p]) for p in range(6))
    omega = jnp.concatenate([u, b, t], axis=-1)
    aux = {"unimodal": alpha, "bimodal": bi_alpha, "trimodal": tri_alpha,
           "U": u, "B": b, "T": t}
    return omega, aux

  @staticmethod
  def vertex_names(names: list[str], edges: str = "paper") -> dict[str, list[str]]:
    """Column names of aux['unimodal'], ['bimodal'] and ['trimodal'] for these modalities."""
    pairs = list(itertools.combinations(range(3), 2))
    tri = [f"{_pair_name(names, pairs[x])}|{_pair_name(names, pairs[y])}"
           for x, y in _bimodal_pairs(edges)]
    tri += [f"{_pair_name(names, p)}|{names[({0, 1, 2} - set(p)).pop()]}" for p in pairs]
    return {"unimodal": list(names), "bimodal": [_pair_name(names, p) for p in pairs],
            "trimodal": tri}


def _bimodal_pairs(edges: str) -> list[tuple[int, int]]:
  """Indices into the bimodal vertices (01, 02, 12) of the bimodal x bimodal trimodal
  vertices, in order: all pairs, or graph11_new's (av, vl), (av, al), (vl, al)."""
  if edges == "reference":
    return [(0, 2), (0, 1), (2, 1)]
  return list(itertools.combinations(range(3), 2))


def _pair_name(names, pair) -> str:
  return f"{names[pair[0]]}-{names[pair[1]]}"


def tensor_fusion(zs: list[jnp.ndarray]) -> jnp.ndarray:
  """TFN Eq. 1: flatten([z_1; 1] (x) [z_2; 1] (x) ...) -> (B, prod (d_m + 1))."""
  out = None
  for z in zs:
    z1 = jnp.concatenate([z, jnp.ones(z.shape[:-1] + (1,), z.dtype)], axis=-1)
    out = z1 if out is None else (out[:, :, None] * z1[:, None, :]).reshape(z.shape[0], -1)
  return out


class SimpleFusion(nn.Module):
  """ARGF Table 6 / Fig. 4 alternatives; each returns (fused vector, aux) for the same
  decision network: 'concat' (concatenation; the decision network's dense layers are the
  FC), 'multiply' (element-wise product), 'average' (weighted average with Eq. 10's
  attention: 1/M sum_m alpha_m V_m) and 'tensor' (TFN's outer product of [V_m; 1])."""
  kind: str
  modalities: tuple[str, ...] | None = None  # concatenation order; None: the dict's order

  @nn.compact
  def __call__(self, vs: dict[str, jnp.ndarray]):
    v = [vs[m] for m in (self.modalities or vs)]
    if self.kind == "concat":
      return jnp.concatenate(v, axis=-1), {}
    if self.kind == "multiply":
      out = v[0]
      for x in v[1:]:
        out = out * x
      return out, {}
    if self.kind == "average":
      alpha = ModalityAttention(name="attention")(v)
      return (alpha[..., None] * jnp.stack(v, axis=1)).mean(1), {"unimodal": alpha}
    if self.kind == "tensor":
      return tensor_fusion(v), {}
    raise ValueError(f"unknown fusion {self.kind!r}")


class DecisionNetwork(nn.Module):
  """Eq. 16: normalisation -> Dense tanh -> Dense tanh -> Dense (logits; the softmax of the
  paper is applied by the loss). norm: 'batch' (BatchNorm over the real rows of the batch,
  `row_mask`), 'layer' or 'none'."""
  out_dim: int
  hidden: int = 50
  norm: str = "batch"
  dropout: float = 0.0
  momentum: float = 0.9

  @nn.compact
  def __call__(self, z, row_mask=None, *, train: bool = False):
    if self.norm == "batch":
      mask = None if row_mask is None else jnp.broadcast_to(row_mask[:, None], z.shape)
      z = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-5,
                       name="norm")(z, mask=mask)
    elif self.norm == "layer":
      z = nn.LayerNorm(name="norm")(z)
    elif self.norm != "none":
      raise ValueError(f"decision norm must be batch, layer or none, got {self.norm!r}")
    z = jnp.tanh(nn.Dense(self.hidden, name="dense_0")(z))
    z = Dropout(self.dropout, deterministic=not train)(z)
    z = jnp.tanh(nn.Dense(self.hidden, name="dense_1")(z))
    z = Dropout(self.dropout, deterministic=not train)(z)
    return nn.Dense(self.out_dim, name="out")(z)


FUSIONS = ("graph", "concat", "multiply", "average", "tensor")

__all__ = ["GraphFusion", "SimpleFusion", "DecisionNetwork", "FusionMLP", "ModalityAttention",
           "similarity", "vertex_logits", "weighted_vertices", "tensor_fusion", "FUSIONS"]
