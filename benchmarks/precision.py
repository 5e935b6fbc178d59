"""fp32 against bf16 mixed precision on this machine's CPU: a training step of each preset's network.

    python -m benchmarks.precision [--steps 20] [--repeats 5]

For the Fashion-MNIST CNN (batch 128 of 28x28), the character Transformer (32 x 64 tokens, dim 128,
4 layers) and the character LSTM (32 x 128 tokens, 2 x 256): forward, cross-entropy, backward and an
AdamW step, in fp32 and under `torch.autocast("cpu", torch.bfloat16)` (what Lightning's "bf16-mixed"
does), alternated `--repeats` times; prints the median step time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from modules.cnn import CNN
from modules.recurrent import RecurrentLMNet
from modules.transformer import TransformerLMNet


def cases() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor, Callable]]:
    torch.manual_seed(0)
    cnn = CNN((1, 28, 28), 10, channels=(32, 64), hidden_dim=256, dropout=0.2)
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    text = torch.randint(0, 70, (32, 129))
    transformer = TransformerLMNet(70, dim=128, num_layers=4, num_heads=4, max_length=64)
    lstm = RecurrentLMNet(70, embed_dim=128, hidden_dim=256, num_layers=2)

    def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        return out.reshape(-1, out.shape[-1])

    return {
        "CNN, Fashion-MNIST": (cnn, images, labels, logits),
        "Transformer LM": (transformer, text[:, :64], text[:, 1:65].reshape(-1), logits),
        "LSTM LM": (lstm, text[:, :128], text[:, 1:129].reshape(-1), logits),
    }


def time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: Callable, bf16: bool, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    durations = []
    for _ in range(steps + 2):  # two warm-up steps
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(logits(model, x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeats} x {args.steps} steps"
    )
    for name, (model, x, y, logits) in cases().items():
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for bf16 in (False, True):
                times[bf16].append(time_steps(model, x, y, logits, bf16, args.steps))
        full, mixed = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name:20s} fp32 {full * 1000:7.1f} ms  bf16-mixed {mixed * 1000:7.1f} ms  speed-up x{full / mixed:.2f}")


if __name__ == "__main__":
    main()
