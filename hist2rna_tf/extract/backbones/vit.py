"""One compact Keras 3 vision transformer for every pathology encoder of the catalog (catalog.ViTSpec):
the layers and their order as timm's VisionTransformer builds them, so that a timm checkpoint's
tensors load one to one (weights.py) and give the same features.

  tiles [B, T, T, 3] (normalised) -> patch embedding (a T/p x T/p grid, row by row) -> [CLS, registers,
  patches] with learnt position embeddings (on the patches only when `no_embed_class`) -> `depth`
  blocks of (LayerNorm -> multi-head attention -> layer scale -> +) and (LayerNorm -> MLP (GELU) or
  packed SwiGLU -> layer scale -> +) -> LayerNorm -> the feature: the CLS token, the CLS token
  beside the mean of the patch tokens, or (CONCH v1.5) an attentional pooler's one query over all
  tokens -> LayerNorm.

LayerNorm epsilon 1e-6 (the spec's), exact (erf) GELU, attention scaled by head_dim^-1/2, as timm.
The model takes normalised tiles of its own size; `build.py` pairs it with the encoder's reference
resize and its own mean and std.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from hist2rna_tf.extract.backbones.catalog import ViTSpec

SERIALIZABLE = "hist2rna_tf"  # the package name custom layers are registered under (.keras files)


@keras.saving.register_keras_serializable(package=SERIALIZABLE)
class Tokens(layers.Layer):
    """Patch tokens [B, N, D] -> [CLS, registers, patches] [B, 1 + R + N, D] with position embeddings:
    added after the concatenation (timm's default: CLS has one), or to the patches before it
    (`no_embed_class`: DINOv2 with registers, UNI2-h)."""

    def __init__(self, embed_dim: int, num_patches: int, reg_tokens: int = 0, no_embed_class: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.num_patches = int(embed_dim), int(num_patches)
        self.reg_tokens, self.no_embed_class = int(reg_tokens), bool(no_embed_class)

    def build(self, input_shape):
        self.cls_token = self.add_weight(name="cls_token", shape=(1, 1, self.embed_dim), initializer="zeros")
        self.reg_token = (self.add_weight(name="reg_token", shape=(1, self.reg_tokens, self.embed_dim),
                                          initializer="zeros") if self.reg_tokens else None)
        length = self.num_patches + (0 if self.no_embed_class else 1 + self.reg_tokens)
        self.pos_embed = self.add_weight(name="pos_embed", shape=(1, length, self.embed_dim),
                                         initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, patches):
        batch = ops.shape(patches)[0]
        prefix = [ops.broadcast_to(self.cls_token, (batch, 1, self.embed_dim))]
        if self.reg_token is not None:
            prefix.append(ops.broadcast_to(self.reg_token, (batch, self.reg_tokens, self.embed_dim)))
        if self.no_embed_class:
            return ops.concatenate([*prefix, patches + self.pos_embed], axis=1)
        return ops.concatenate([*prefix, patches], axis=1) + self.pos_embed

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "num_patches": self.num_patches,
                "reg_tokens": self.reg_tokens, "no_embed_class": self.no_embed_class}


@keras.saving.register_keras_serializable(package=SERIALIZABLE)
class Attention(layers.Layer):
    """timm's Attention: one qkv projection (q, k, v in that order, head by head), softmax(q k^T /
    sqrt(head_dim)) v, then the output projection."""

    def __init__(self, embed_dim: int, num_heads: int, qkv_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.num_heads, self.qkv_bias = int(embed_dim), int(num_heads), bool(qkv_bias)
        self.head_dim = self.embed_dim // self.num_heads
        self.qkv = layers.Dense(3 * self.embed_dim, use_bias=self.qkv_bias, name="qkv")
        self.proj = layers.Dense(self.embed_dim, name="proj")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def call(self, x):
        batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, tokens, 3, self.num_heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, heads, N, head_dim]
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = ops.softmax(ops.matmul(q * self.head_dim ** -0.5, ops.transpose(k, (0, 1, 3, 2))), axis=-1)
        out = ops.reshape(ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3)), (batch, tokens, self.embed_dim))
        return self.proj(out)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "qkv_bias": self.qkv_bias}


@keras.saving.register_keras_serializable(package=SERIALIZABLE)
class LayerScale(layers.Layer):
    """x * gamma, gamma [D] learnt (timm's LayerScale)."""

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],), initializer=keras.initializers.Constant(1e-5))

    def call(self, x):
        return x * self.gamma


@keras.saving.register_keras_serializable(package=SERIALIZABLE)
class Mlp(layers.Layer):
    """fc1 -> GELU (exact) -> fc2, or, `swiglu`, timm's SwiGLUPacked: fc1's output halved, the first
    half through SiLU times the second, -> fc2."""

    def __init__(self, embed_dim: int, hidden: int, swiglu: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim, self.hidden, self.swiglu = int(embed_dim), int(hidden), bool(swiglu)
        self.fc1 = layers.Dense(self.hidden, name="fc1")
        self.fc2 = layers.Dense(self.embed_dim, name="fc2")

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.hidden // 2 if self.swiglu else self.hidden))

    def call(self, x):
        x = self.fc1(x)
        if self.swiglu:
            gated, values = ops.split(x, 2, axis=-1)
            x = ops.silu(gated) * values
        else:
            x = ops.gelu(x, approximate=False)
        return self.fc2(x)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "hidden": self.hidden, "swiglu": self.swiglu}


@keras.saving.register_keras_serializable(package=SERIALIZABLE)
class Feature(layers.Layer):
    """The tokens' feature: the CLS token, or the CLS token beside the mean of the patch tokens (the
    tokens after CLS and the `skip` registers)."""

    def __init__(self, mode: str = "cls", skip: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.mode, self.skip = mode, int(skip)

    def call(self, tokens):
        cls = tokens[:, 0]
        if self.mode == "cls":
            return cls
        return ops.concatenate([cls, ops.mean(tokens[:, 1 + self.skip:], axis=1)], axis=-1)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "skip": self.skip}


@keras.saving.register_keras_serializable(package=SERIALIZABLE)
class AttentionalPooler(layers.Layer):
    """CONCH's AttentionalPooler with one query (its tokens already LayerNormed, `pool_ln_k`):
    q = to_q(ln_q(query)); k, v = halves of to_kv(tokens); multi-head softmax(q k^T / sqrt(head_dim)) v
    -> to_out -> [B, dim]. Its LayerNorms have torch's default epsilon, 1e-5."""

    def __init__(self, dim: int, num_heads: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self.ln_q = layers.LayerNormalization(epsilon=1e-5, name="ln_q")
        self.to_q = layers.Dense(self.dim, use_bias=False, name="to_q")
        self.to_kv = layers.Dense(2 * self.dim, use_bias=False, name="to_kv")
        self.to_out = layers.Dense(self.dim, use_bias=False, name="to_out")

    def build(self, input_shape):
        self.query = self.add_weight(name="query", shape=(1, self.dim), initializer="random_normal")
        self.ln_q.build((1, self.dim))
        self.to_q.build((1, self.dim))
        self.to_kv.build(input_shape)
        self.to_out.build((1, self.dim))

    def call(self, tokens):
        batch, n = ops.shape(tokens)[0], ops.shape(tokens)[1]
        q = ops.reshape(self.to_q(self.ln_q(self.query)), (1, self.num_heads, 1, self.head_dim))
        k, v = ops.split(self.to_kv(tokens), 2, axis=-1)
        k, v = (ops.transpose(ops.reshape(t, (batch, n, self.num_heads, self.head_dim)), (0, 2, 1, 3)) for t in (k, v))
        weights = ops.softmax(ops.matmul(q * self.head_dim ** -0.5, ops.transpose(k, (0, 1, 3, 2))), axis=-1)
        out = ops.reshape(ops.matmul(weights, v), (batch, self.dim))  # [B, heads, 1, head_dim], head-major
        return self.to_out(out)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads}


def build_vit(spec: ViTSpec, tile_size_px: int, name: str = "vit") -> keras.Model:
    """The encoder of `spec` on tiles of `tile_size_px` (a multiple of its patch size; its position
    embeddings are for a `spec.img_size` grid, so the two must agree): normalised RGB [B, T, T, 3] ->
    features [B, spec.feature_dim]."""
    if tile_size_px % spec.patch_size:
        raise ValueError(f"tiles of {tile_size_px} px do not divide into {spec.patch_size}-px patches")
    if tile_size_px != spec.img_size:
        raise ValueError(f"tiles of {tile_size_px} px; this encoder's position embeddings are for {spec.img_size} px")
    grid = tile_size_px // spec.patch_size

    # --- layers ---
    inputs = keras.Input((tile_size_px, tile_size_px, 3), name="tiles")
    x = layers.Conv2D(spec.embed_dim, spec.patch_size, strides=spec.patch_size, name="patch_embed")(inputs)
    x = layers.Reshape((grid * grid, spec.embed_dim), name="patches")(x)  # row by row, as timm's flatten
    x = Tokens(spec.embed_dim, grid * grid, spec.reg_tokens, spec.no_embed_class, name="tokens")(x)
    for i in range(spec.depth):
        h = layers.LayerNormalization(epsilon=spec.norm_eps, name=f"block{i}_norm1")(x)
        h = Attention(spec.embed_dim, spec.num_heads, spec.qkv_bias, name=f"block{i}_attn")(h)
        if spec.layer_scale:
            h = LayerScale(name=f"block{i}_ls1")(h)
        x = layers.Add(name=f"block{i}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=spec.norm_eps, name=f"block{i}_norm2")(x)
        h = Mlp(spec.embed_dim, spec.mlp_hidden, spec.swiglu, name=f"block{i}_mlp")(h)
        if spec.layer_scale:
            h = LayerScale(name=f"block{i}_ls2")(h)
        x = layers.Add(name=f"block{i}_add2")([x, h])
    x = layers.LayerNormalization(epsilon=spec.norm_eps, name="norm")(x)
    if spec.output == "pooler":
        x = layers.LayerNormalization(epsilon=1e-5, name="pool_ln_k")(x)
        x = AttentionalPooler(spec.pooler_dim, spec.pooler_heads, name="pooler")(x)
        outputs = layers.LayerNormalization(epsilon=1e-5, name="pool_norm")(x)
    else:
        outputs = Feature(spec.output, spec.reg_tokens, name="feature")(x)

    # --- functional model ---
    return keras.Model(inputs, outputs, name=name)
