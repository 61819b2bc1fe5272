"""Speed of interval bounds and of the certified-radius search, as ratios measured in one run.

(a) margin_lower_bounds / plain forward pass   goal <= 2.5
(b) certified_radius at tol 1e-5 / one bound pass   goal <= 8 (bisection: 13 passes at 8.8/255)

    python benchmarks/bounds.py [--data-dir DIR] [--repeats 5]

cnn7 runs on a 3x32x32 batch of 128 (random pixels, IBP-initialized, so its radii are small);
the small CNN runs on real MNIST after a short IBP training, so its radii spread over the cap.
"""

from __future__ import annotations

import argparse
import timeit

import torch

import raycert.cert.certify as certify_module
from raycert.cert.bounds import margin_lower_bounds
from raycert.cert.models import build_model, ibp_init
from raycert.data import dataset_info, load
from raycert.training.methods import robust_cross_entropy


def best_time(fn, repeats: int) -> float:
    """Least time per call of ``fn`` over ``repeats`` rounds of at least 0.2 s each.

    The minimum is the least disturbed by other work on the machine; rounds of many calls keep
    timer resolution out of millisecond-sized passes.
    """
    timer = timeit.Timer(fn)
    calls, _ = timer.autorange()
    return min(timer.repeat(repeat=repeats, number=calls)) / calls


def quick_ibp_training(model, images, labels, eps: float, steps: int) -> None:
    """A few hundred steps of robust cross-entropy at ``eps``: enough for spread-out radii."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(images), (128,), generator=gen)
        x, y = images[index].float() / 255, labels[index]
        ramp = min(1.0, step / (steps / 2)) * eps
        loss = robust_cross_entropy(margin_lower_bounds(model, x, y, ramp))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def measure(name: str, model, x, y, cap: float, repeats: int, dtype: torch.dtype) -> None:
    model = model.to(dtype).eval()
    x = x.to(dtype)
    passes: list[int] = []
    original = certify_module.margin_bounds

    def counting(net, xs, *args, **kwargs):
        passes.append(len(xs))
        return original(net, xs, *args, **kwargs)

    with torch.no_grad():
        forward = best_time(lambda: model(x), repeats)
        bound = best_time(lambda: margin_lower_bounds(model, x, y, cap / 2), repeats)
        search = best_time(lambda: certify_module.certified_radius(model, x, y, cap, 1e-5), repeats)
        certify_module.margin_bounds = counting
        radius = certify_module.certified_radius(model, x, y, cap, 1e-5)
        certify_module.margin_bounds = original
    open_ = ((radius > 0) & (radius < cap)).float().mean()
    print(
        f"{name:<26} {str(dtype).removeprefix('torch.'):<8} "
        f"(a) bound/forward {bound / forward:5.2f}   (b) search/bound {search / bound:5.2f}   "
        f"passes {len(passes):2d}, sample-passes/sample {sum(passes) / len(x):5.2f}, "
        f"radii inside (0, cap) {open_:4.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)

    cifar = dataset_info("cifar10")
    cnn7 = build_model("cnn7", cifar.shape, 10, cifar.mean, cifar.std)
    ibp_init(cnn7)
    x = torch.rand(128, *cifar.shape)
    with torch.no_grad():
        y = cnn7.eval()(x).argmax(dim=1)

    mnist = dataset_info("mnist")
    train = load("mnist", "train", args.data_dir, download=False, limit=20_000)
    test = load("mnist", "test", args.data_dir, download=False, limit=128)
    small = build_model("cnn_small", mnist.shape, 10, mnist.mean, mnist.std)
    ibp_init(small)
    quick_ibp_training(small, train.images, train.labels, eps=0.2, steps=args.train_steps)
    xm, ym = test.images.float() / 255, test.labels

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, tol 1e-5")
    for dtype in (torch.float32, torch.float64):
        measure("cnn7 3x32x32 cap 8.8/255", cnn7, x, y, 8.8 / 255, args.repeats, dtype)
        measure("cnn_small MNIST cap 0.4", small, xm, ym, 0.4, args.repeats, dtype)


if __name__ == "__main__":
    main()
