"""Why a classifier decided as it did: integrated gradients (Sundararajan et al., 2017) with captum, and
their pictures (heat maps over images, coloured tokens).

Integrated gradients integrate the gradient of one class logit F along the straight path from a baseline
x' to the input x; the attributions then sum to F(x) - F(x') (completeness), up to the error of captum's
quadrature (Gauss-Legendre over `steps` points), which every result reports (`delta`, `relative_error`).

- Images (B, C, H, W): one score per pixel and channel. Baseline "black" (the default): the normalised
  image of zeros in pixel space, the absence of ink or light, so a score says what a pixel adds over an
  empty picture (the background of digits and Fashion-MNIST). "mean": the training mean (the normalised
  image of zeros), for pictures whose background is not black.
- Token ids (B, T), texts and biological sequences: captum's `LayerIntegratedGradients` over the core's
  token embedding (`token_embedding`), from the embedding of <pad> at every position of the text to each
  token's own, summed over the embedding dimension: one score per token. Framing tokens (<bos>, [CLS],
  [SEP]) and padding are the same at both ends, so their scores are 0 and they are not shown. The core
  still reads the input's padding mask all along the path (it computes it from the token ids, which stay
  those of the input), so the baseline is "these positions, holding <pad> vectors", not an empty text.
  captum's own convergence delta would run the core on the padding ids, an empty text, so the delta here
  is measured from the path's real start. Two limits: a core's n-gram logits (`cores.ngrams`) read the ids
  and not the embedding, so they are the same at both ends and go unexplained; and a byte-level BPE token
  may decode alone to a part of a character.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cores.ngrams import NgramLogits
from datamodules.special_tokens import BOS_ID, EOS_ID, SPECIALS
from validation import ConfigError

BaselineKind = Literal["black", "mean"]
STEPS = 128  # quadrature points: the digits CNN's completeness error stays within 0.35% (64: up to ~1%)
EXAMPLES_PER_PASS = 512  # inputs on the path per forward and backward pass: bounds the memory taken


@dataclass
class Attribution:
    """The explanation of one input: the class explained and how well its scores add up.

    `delta` is sum(scores) - (output - baseline_output): the quadrature's error (0 for exact integrals)."""

    target: int  # the class whose logit is explained
    probability: float  # its probability at the input
    output: float  # its logit at the input, F(x)
    baseline_output: float  # its logit at the baseline, F(x')
    delta: float

    @property
    def total(self) -> float:
        return self.output - self.baseline_output + self.delta

    @property
    def relative_error(self) -> float:
        """|delta| / |F(x) - F(x')|: the completeness check's error (inf if the logit did not move at all)."""
        difference = abs(self.output - self.baseline_output)
        return abs(self.delta) / difference if difference > 0 else float("inf") if self.delta else 0.0


@dataclass
class ImageAttribution(Attribution):
    image: torch.Tensor  # (C, H, W) the input, normalised, as the model read it
    scores: torch.Tensor  # (C, H, W)


@dataclass
class TokenAttribution(Attribution):
    tokens: list[str]  # the text's tokens, decoded one by one (no framing tokens, no padding)
    scores: list[float]  # one per token


@contextlib.contextmanager
def gradients_on(net: nn.Module) -> Iterator[None]:
    """Gradients wherever this is called from: inside a validation loop (inference mode) too. cuDNN's RNNs
    cannot run backward in eval mode, so for a core with one cuDNN is off meanwhile (PyTorch's own, slower
    kernels take over)."""
    enabled = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = enabled and not any(isinstance(m, nn.RNNBase) for m in net.modules())
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        torch.backends.cudnn.enabled = enabled


@contextlib.contextmanager
def evaluating(net: nn.Module) -> Iterator[None]:
    """The core in eval mode (no dropout: the same function at every point of the path), each of its modules
    as it was after."""
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def floating_dtype(net: nn.Module) -> torch.dtype:
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


def chosen_targets(logits: torch.Tensor, targets: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """(B,) classes to explain: the given ones, else the predicted ones."""
    if targets is None:
        return logits.argmax(-1)
    chosen = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if len(chosen) == 1:
        chosen = chosen.expand(len(logits))
    if len(chosen) != len(logits) or not ((chosen >= 0) & (chosen < logits.shape[-1])).all():
        raise ConfigError(f"targets must be {len(logits)} classes in [0, {logits.shape[-1]}), got {chosen.tolist()}")
    return chosen


def image_baseline(datamodule: Any, images: torch.Tensor, kind: BaselineKind = "black") -> torch.Tensor:
    """(1, C, H, W): the normalised black image (an image datamodule's `prepare_batch` of zero pixels), or the
    training mean (zeros)."""
    if kind == "mean":
        return torch.zeros_like(images[:1])
    if kind != "black":
        raise ConfigError(f"baseline must be 'black' or 'mean', got {kind!r}")
    if getattr(datamodule, "input_kind", "") != "images" or not hasattr(datamodule, "prepare_batch"):
        raise ConfigError(f"a black baseline needs an image datamodule, not {type(datamodule).__name__}")
    black = torch.zeros((1, *images.shape[1:]), dtype=torch.uint8, device=images.device)
    return datamodule.prepare_batch((black, None), training=False)[0].to(images.dtype)


def image_attributions(
    net: nn.Module,
    images: torch.Tensor,
    baseline: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | None = None,
    steps: int = STEPS,
) -> list[ImageAttribution]:
    """Integrated gradients of (B, C, H, W) normalised images against `baseline` ((1 or B, C, H, W)), for the
    predicted classes or `targets`; captum's convergence delta is the completeness error."""
    from captum.attr import IntegratedGradients

    with gradients_on(net), evaluating(net):
        dtype = floating_dtype(net)
        images = images.detach().clone().to(dtype)  # a normal tensor, even from inference mode
        baseline = baseline.detach().clone().to(dtype).expand_as(images).contiguous()
        with torch.no_grad():
            logits, baseline_logits = net(images).float(), net(baseline).float()  # (B, K)
        chosen = chosen_targets(logits, targets)
        scores, deltas = IntegratedGradients(net).attribute(
            images,
            baselines=baseline,
            target=chosen,
            n_steps=steps,
            internal_batch_size=max(EXAMPLES_PER_PASS, steps),
            return_convergence_delta=True,
        )
    return [
        ImageAttribution(
            target=int(chosen[i]),
            probability=float(logits[i].softmax(-1)[chosen[i]]),
            output=float(logits[i, chosen[i]]),
            baseline_output=float(baseline_logits[i, chosen[i]]),
            delta=float(deltas[i]),
            image=images[i].detach().float().cpu(),
            scores=scores[i].detach().float().cpu(),
        )
        for i in range(len(images))
    ]


def token_embedding(net: nn.Module) -> nn.Embedding:
    """The core's token embedding: its `embedding`, a `transformers` model's input embeddings, or the first
    `nn.Embedding` inside it (not an n-gram table, which maps ids to logits)."""
    own = getattr(net, "embedding", None)
    if isinstance(own, nn.Embedding):
        return own
    for module in net.modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get):
            with contextlib.suppress(NotImplementedError, AttributeError):
                found = get()
                if isinstance(found, nn.Embedding):
                    return found
    tables = {id(m.table) for m in net.modules() if isinstance(m, NgramLogits)}
    for module in net.modules():
        if isinstance(module, nn.Embedding) and id(module) not in tables:
            return module
    raise ConfigError(f"{type(net).__name__} has no token embedding (nn.Embedding) to attribute to")


def framing_ids(tokenizer: Any) -> tuple[int, ...]:
    """The ids that frame a text rather than belong to it: a pretrained tokenizer's [CLS]/[SEP] (its
    `special_ids`), else firstlight's <bos> and <eos>."""
    special = getattr(tokenizer, "special_ids", None)
    if special is None:
        return (BOS_ID, EOS_ID)
    return tuple(i for i in (getattr(special, "bos", None), getattr(special, "sep", None)) if i is not None)


def token_text(tokenizer: Any, token_id: int) -> str:
    """One token as text: decoded alone, or its name where decoding drops it (<unk>, specials)."""
    if tokenizer is None:
        return f"<{token_id}>"
    text = tokenizer.decode([token_id])
    if text:
        return text
    id_to_token = getattr(getattr(tokenizer, "tokenizer", None), "id_to_token", None)  # a Hugging Face vocabulary
    name = id_to_token(token_id) if callable(id_to_token) else None
    if name:
        return str(name)
    return SPECIALS[token_id] if token_id < len(SPECIALS) else f"<{token_id}>"


@contextlib.contextmanager
def layer_output(layer: nn.Module, output: torch.Tensor) -> Iterator[None]:
    """Every forward of `layer` returns `output` meanwhile."""
    handle = layer.register_forward_hook(lambda module, args, result: output)
    try:
        yield
    finally:
        handle.remove()


def flattened(net: nn.Module) -> Callable[..., torch.Tensor]:
    """`net` with its outputs flattened after the batch axis, so that one index names one answer: (B, K) stays
    as it is, a (B, T, K) answer per position becomes (B, T * K)."""
    return lambda *inputs: net(*inputs).flatten(1)


def token_attributions(
    net: nn.Module,
    tokens: torch.Tensor,
    pad_id: int,
    tokenizer: Any = None,
    targets: Sequence[int] | torch.Tensor | None = None,
    steps: int = STEPS,
) -> list[TokenAttribution]:
    """Integrated gradients over the token embedding of (B, T) ids padded with `pad_id`, for the predicted
    classes or `targets`, from <pad> vectors at the text's positions (see the module's docstring). A core with
    an answer per position (B, T, K) is explained at `targets` indexing its flattened outputs (position * K +
    class), one per row."""
    from captum.attr import LayerIntegratedGradients

    layer = token_embedding(net)
    with gradients_on(net), evaluating(net):
        tokens = tokens.detach().clone()
        real = tokens != pad_id  # (B, T)
        framing = torch.tensor(framing_ids(tokenizer), dtype=tokens.dtype, device=tokens.device)
        text = real & ~torch.isin(tokens, framing)  # the positions whose tokens are explained
        baseline = tokens.masked_fill(text, pad_id)
        with torch.no_grad():
            outputs = net(tokens).float()  # (B, K), or (B, T, K) for an answer per position
            probabilities, logits = outputs.softmax(-1).flatten(1), outputs.flatten(1)  # (B, K) or (B, T * K)
            with layer_output(layer, layer(baseline)):  # the path's start: pad vectors, the input's mask
                baseline_logits = net(tokens).float().flatten(1)
        chosen = chosen_targets(logits, targets)
        scores = LayerIntegratedGradients(flattened(net), layer).attribute(
            tokens,
            baselines=baseline,
            target=chosen,
            n_steps=steps,
            internal_batch_size=max(EXAMPLES_PER_PASS, steps),
        )  # (B, T, D)
        per_token = scores.detach().float().sum(-1).cpu()  # (B, T)
    results = []
    for i in range(len(tokens)):
        target = int(chosen[i])
        output, start = float(logits[i, target]), float(baseline_logits[i, target])
        positions = text[i].nonzero().flatten().tolist()
        results.append(
            TokenAttribution(
                target=target,
                probability=float(probabilities[i, target]),
                output=output,
                baseline_output=start,
                delta=float(per_token[i].sum()) - (output - start),
                tokens=[token_text(tokenizer, int(tokens[i, p])) for p in positions],
                scores=[float(per_token[i, p]) for p in positions],
            )
        )
    return results


# Pictures


def heat_map(image: torch.Tensor, scores: torch.Tensor, size: int = 192, gap: int = 4) -> np.ndarray:
    """(C, H, W) normalised image and its scores -> an RGB image (uint8) of three panels about `size` pixels
    high: the input (stretched to its own range), the scores summed over channels (red adds to the class
    logit, blue takes from it, white 0, scaled by the largest |score|), and the scores over the input in grey
    (opaque where |score| is largest). Drawn with array operations: a matplotlib figure takes ~0.5 s."""
    from matplotlib import colormaps

    cell = max(1, size // max(image.shape[1:]))
    pixels = image.float().numpy()
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min() + 1e-8)  # (C, H, W) in [0, 1]
    picture = np.repeat(pixels, 3, axis=0) if len(pixels) == 1 else pixels[:3]
    picture = picture.transpose(1, 2, 0)  # (H, W, 3)
    grey = picture.mean(-1, keepdims=True)  # (H, W, 1)
    summed = scores.float().sum(0).numpy()  # (H, W)
    signed = summed / (np.abs(summed).max() + 1e-12)  # in [-1, 1]
    colours = colormaps["bwr"]((signed + 1) / 2)[..., :3]  # (H, W, 3)
    weight = np.abs(signed)[..., None]
    overlay = (1 - weight) * (0.25 + 0.5 * grey) + weight * colours
    panels = [picture, colours, overlay]
    panels = [panel.repeat(cell, axis=0).repeat(cell, axis=1) for panel in panels]
    white = np.ones((panels[0].shape[0], gap, 3))
    joined = np.concatenate([panels[0], white, panels[1], white, panels[2]], axis=1)
    return (joined.clip(0, 1) * 255).round().astype(np.uint8)


def heat_map_figure(image: torch.Tensor, scores: torch.Tensor, title: str, note: str = "", size: int = 192) -> bytes:
    """The three panels of `heat_map` as a PNG with `title` above them (the class explained and its
    probability), `note` below (the completeness check), and a colour scale beside the attributions: the
    summed score each colour stands for, from -max|score| (blue) to +max|score| (red). The title and note are
    also the PNG's "Title" and "Description" metadata. A matplotlib figure: ~0.5 s, for the command line."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable

    joined = heat_map(image, scores, size)  # (size, 3 * width + 2 * gap, 3)
    width = (joined.shape[1] - 8) // 3
    panels = [joined[:, i * (width + 4) : i * (width + 4) + width] for i in range(3)]
    largest = float(scores.float().sum(0).abs().max()) or 1.0
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.7), gridspec_kw={"wspace": 0.45})
    names = ("input", "attributions (red: for, blue: against)", "attributions over the input")
    for axis, panel, name in zip(axes, panels, names, strict=True):
        axis.imshow(panel, interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.set_axis_off()
    scale = ScalarMappable(colors.Normalize(-largest, largest), "bwr")
    figure.colorbar(scale, ax=axes[1], fraction=0.046, pad=0.04).set_label("score, summed over channels", fontsize=7)
    figure.suptitle(title, fontsize=12)
    if note:
        figure.text(0.5, 0.02, note, ha="center", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Title": title, "Description": note})
    plt.close(figure)
    return buffer.getvalue()


def token_separator(tokens: list[str]) -> str:
    """Words are shown with spaces between them; tokens that carry their own spaces (BPE, characters) not."""
    return "" if any(token[:1].isspace() or token[-1:].isspace() for token in tokens) else " "


def tokens_html(attribution: TokenAttribution, title: str = "") -> str:
    """The tokens on backgrounds green where they add to the class logit and red where they take from it,
    the stronger the larger |score| (scaled by the text's largest); each token's score on hover."""
    largest = max((abs(s) for s in attribution.scores), default=0.0) or 1.0
    spans = []
    for token, score in zip(attribution.tokens, attribution.scores, strict=True):
        alpha = abs(score) / largest
        colour = f"rgba(0, 160, 0, {alpha:.2f})" if score >= 0 else f"rgba(220, 0, 0, {alpha:.2f})"
        spans.append(
            f'<span title="{score:+.4f}" style="background:{colour};padding:1px 2px;border-radius:3px;'
            f'white-space:pre">{html.escape(token)}</span>'
        )
    heading = f"<p>{html.escape(title)}</p>" if title else ""
    body = token_separator(attribution.tokens).join(spans)
    return f'<div style="font-family:sans-serif;line-height:1.9">{heading}<p>{body}</p></div>'


def top_tokens(attribution: TokenAttribution, count: int = 5) -> str:
    """The `count` tokens of largest |score|, most first: "+moving 0.412, -dull -0.380"."""
    order = sorted(range(len(attribution.tokens)), key=lambda i: -abs(attribution.scores[i]))[:count]
    return ", ".join(
        f"{'+' if attribution.scores[i] >= 0 else '-'}{attribution.tokens[i].strip() or repr(attribution.tokens[i])} "
        f"{attribution.scores[i]:.3f}"
        for i in order
    )


def completeness(attribution: Attribution) -> str:
    """The check in words: "sum 2.310 = logit difference 2.315 (error 0.22%)"."""
    difference = attribution.output - attribution.baseline_output
    return f"sum {attribution.total:.3f} = logit difference {difference:.3f} (error {attribution.relative_error:.2%})"
