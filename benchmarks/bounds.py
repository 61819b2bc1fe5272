"""Speed and tightness of the verifiers, as ratios measured in one run.

(a) margin_lower_bounds / plain forward pass   goal <= 2.5
(b) certified_radius at tol 1e-5 / one bound pass   goal <= 8 (bisection: 13 passes at 8.8/255)
(c) one CROWN-IBP bound / one IBP bound (every margin refined, and only what deciding > 0 needs)
(d) CROWN memory: bytes of one sample's backward rows, per architecture (worst case)
(e) with --runs: certification seconds per 1,000 MNIST test images per verifier, and ACR as %
    of the cap under IBP vs the default and the tightest cascade (optimized slopes). Goals: a
    cascade certifies >= 3 points of the cap more than IBP on a high-kappa ACERT model, at
    <= 3x IBP's certification time.
(f) a backward pass's map through a model's first Conv2d (into the image's channels): the
    kernel ``raycert.cert.backward`` uses on a CPU (PyTorch's own) / conv_transpose2d's (oneDNN)
(g) ``certify`` of one batch of 128, IBP vs the default cascade, float32 and float64: its bound
    passes (the radius search's dependent rounds) and the calls that would make the host wait
    for a GPU (``benchmarks/counters.py``), the small, sequential work a GPU idles through;
    on cnn7 too unless ``--no-cnn7-counts`` (its cascade takes minutes on a CPU thread)

    python benchmarks/bounds.py [--data-dir DIR] [--repeats 5] [--runs NAME=RUN_DIR ...]
                                [--only SECTIONS] [--no-cnn7-counts]

cnn7 runs on a 3x32x32 batch of 128 (random pixels, IBP-initialized, so its radii are small);
the small CNN runs on real MNIST after a short IBP training, so its radii spread over the cap.
``--runs`` takes run folders of ``raycert train mnist`` (e.g. the quick preset with
``--kappa 0`` and ``--kappa 0.5``, and ``--method ibp``).
"""

from __future__ import annotations

import argparse
import copy
import timeit
from functools import partial

import torch
import torch.nn.functional as F
from counters import counting_bound_passes, counting_host_syncs, top_syncs  # beside this script

from raycert.cert.backward import conv_transpose
from raycert.cert.bounds import margin_lower_bounds
from raycert.cert.certify import certify, summarize
from raycert.cert.linear import crown_rows_bytes
from raycert.cert.models import build_model, ibp_init
from raycert.cert.radius import certified_radius
from raycert.cert.verifiers import DEFAULT_VERIFIER, margin_bounds
from raycert.data import dataset_info, load
from raycert.training.methods import robust_cross_entropy
from raycert.training.rundir import load_run


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
    with torch.no_grad():
        forward = best_time(lambda: model(x), repeats)
        bound = best_time(lambda: margin_lower_bounds(model, x, y, cap / 2), repeats)
        search = best_time(lambda: certified_radius(model, x, y, cap, 1e-5), repeats)
        with counting_bound_passes() as passes:
            radius = certified_radius(model, x, y, cap, 1e-5)
    open_ = ((radius > 0) & (radius < cap)).float().mean()
    print(
        f"{name:<26} {str(dtype).removeprefix('torch.'):<8} "
        f"(a) bound/forward {bound / forward:5.2f}   (b) search/bound {search / bound:5.2f}   "
        f"passes {passes['passes']:2d}, "
        f"sample-passes/sample {passes['samples'] / len(x):5.2f}, "
        f"radii inside (0, cap) {open_:4.0%}"
    )


def measure_linear(name: str, model, x, y, eps: float, repeats: int, dtype) -> None:
    """(c): one CROWN-IBP bound against one IBP bound at ``eps``."""
    model = model.to(dtype).eval()
    x = x.to(dtype)
    with torch.no_grad():
        ibp = best_time(lambda: margin_lower_bounds(model, x, y, eps), repeats)
        full = best_time(lambda: margin_bounds(model, x, y, eps, "crown-ibp"), repeats)
        part = best_time(lambda: margin_bounds(model, x, y, eps, "crown-ibp", verify_above=0.0), 1)
        gain = margin_bounds(model, x, y, eps, "crown-ibp") - margin_lower_bounds(model, x, y, eps)
    print(
        f"{name:<26} {str(dtype).removeprefix('torch.'):<8} "
        f"(c) crown-ibp/ibp {full / ibp:6.2f} (deciding > 0 only: {part / ibp:6.2f}); "
        f"mean margin gain {float(gain.mean()):.3g}"
    )


def crown_memory() -> None:
    """(d): CROWN's backward rows for one sample, worst case (every neuron unstable)."""
    for arch, shape in (("mlp", (1, 28, 28)), ("cnn_small", (1, 28, 28)), ("cnn7", (1, 28, 28))):
        net = build_model(arch, shape, 10, (0.0,) * shape[0], (1.0,) * shape[0])
        report(arch, shape, crown_rows_bytes(net, shape))
    net = build_model("cnn7", (3, 32, 32), 10, (0.0,) * 3, (1.0,) * 3)
    report("cnn7", (3, 32, 32), crown_rows_bytes(net, (3, 32, 32)))


def report(arch: str, shape, memory: dict) -> None:
    per_relu = ", ".join(f"{b / 2**20:,.0f}" for b in memory["per_relu"].values())
    print(
        f"(d) CROWN {arch:<9} {'x'.join(map(str, shape)):<8} float64 MiB per sample and ReLU: "
        f"[{per_relu}], peak {memory['peak'] / 2**30:,.2f} GiB"
    )


def certification(
    runs: list[str], data_dir, limit: int, verifiers: list[str], repeats: int
) -> None:
    """(e): seconds per 1,000 test images and ACR % of cap per verifier, on trained runs; the
    gain in points of the cap and the time as a multiple of IBP's, per cascade. Each time is
    the least of ``repeats`` rounds, the verifiers taking turns, so a burst of other work on
    the machine slows one round, not one verifier."""
    test = load("mnist", "test", data_dir, download=False, limit=limit)
    for spec in runs:
        name, run_dir = spec.split("=", 1)
        model, cfg = load_run(run_dir)
        for verifier in ("ibp", *verifiers):  # warm: first calls load kernels
            certify(model, test.images[:64], test.labels[:64], cfg.cert_cap, verifier=verifier)
        acr, seconds = {}, {}
        for _ in range(repeats):
            for verifier in ("ibp", *verifiers):
                start = timeit.default_timer()
                certs = certify(
                    model,
                    test.images,
                    test.labels,
                    cfg.cert_cap,
                    tol=cfg.eval_tol,
                    verifier=verifier,
                )
                elapsed = (timeit.default_timer() - start) * 1000 / limit
                seconds[verifier] = min(seconds.get(verifier, elapsed), elapsed)
                summary = summarize(certs)
                acr[verifier] = summary["acr_pct"]
        print(
            f"(e) {name:<10} clean {summary['clean_acc']:.3f}  ACR % of cap {cfg.cert_cap:g}: "
            f"ibp {acr['ibp']:5.2f}% ({seconds['ibp']:5.1f} s/1k)"
        )
        for verifier in verifiers:
            print(
                f"    {verifier:<32} {acr[verifier]:5.2f}% ({seconds[verifier]:6.1f} s/1k)  "
                f"gain {acr[verifier] - acr['ibp']:+.2f} points, time "
                f"x{seconds[verifier] / seconds['ibp']:.2f}"
            )


def first_layer_transpose(repeats: int) -> None:
    """(f): both kernels on the first Conv2d of cnn_small (MNIST) and of cnn7 (CIFAR-10), for
    the backward rows of 64 samples with every margin refined."""
    for name, dataset, rows in (("cnn_small", "mnist", 64 * 9), ("cnn7", "cifar10", 8 * 9)):
        info = dataset_info(dataset)
        model = build_model(name, info.shape, 10, info.mean, info.std)
        conv = next(m for m in model if isinstance(m, torch.nn.Conv2d))
        with torch.no_grad():
            shape = conv(torch.zeros(1, *info.shape)).shape[1:]
        for dtype in (torch.float32, torch.float64):
            layer = copy.deepcopy(conv).to(dtype)
            coeffs = torch.randn(1, rows, *shape, dtype=dtype)
            ours = best_time(partial(conv_transpose, layer, coeffs, info.shape), repeats)
            kernel = partial(F.conv_transpose2d, coeffs[0], layer.weight, None)
            onednn = best_time(partial(kernel, conv.stride, conv.padding), repeats)
            print(
                f"(f) {name:<9} first Conv2d, {rows} rows, {str(dtype)[6:]}: "
                f"{ours * 1e3:6.2f} ms vs conv_transpose2d {onednn * 1e3:6.2f} ms "
                f"(x{ours / onednn:.2f})"
            )


def certify_counts(name: str, model, images, labels, cap: float) -> None:
    """(g): bound passes and host syncs of ``certify`` on one batch of ``images``, per verifier
    (IBP and the default cascade) and dtype; float32 includes its float64 re-verification."""
    for dtype in (torch.float32, torch.float64):
        for verifier in ("ibp", DEFAULT_VERIFIER):
            run = dict(tol=1e-5, verifier=verifier, batch_size=len(labels), dtype=dtype)
            with counting_bound_passes() as passes, counting_host_syncs() as syncs:
                certify(model, images, labels, cap, **run)
            print(
                f"(g) {name:<26} {str(dtype).removeprefix('torch.'):<8} {verifier:<20} per batch: "
                f"bound passes {passes['passes']:3d} ({passes['samples'] / len(labels):5.2f} "
                f"sample-passes/sample), host syncs {syncs['total']:4d} ({top_syncs(syncs)})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--runs", nargs="*", default=[], help="NAME=RUN_DIR of MNIST runs")
    parser.add_argument("--limit", type=int, default=1000, help="test images for (e)")
    parser.add_argument("--cert-repeats", type=int, default=3, help="rounds of (e) per run")
    parser.add_argument("--skip-speed", action="store_true", help="only (d) and (e)")
    parser.add_argument("--only", default="abcdefg", help="the sections to run, e.g. g")
    parser.add_argument(
        "--cnn7-counts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(g) on cnn7 too",
    )
    parser.add_argument(
        "--verifiers",
        nargs="*",
        default=["ibp+crown-ibp", DEFAULT_VERIFIER],
        help="cascades (e) compares with IBP",
    )
    args = parser.parse_args()
    only = set(args.only)
    if "d" in only:
        crown_memory()
    if args.runs and "e" in only:
        certification(args.runs, args.data_dir, args.limit, args.verifiers, args.cert_repeats)
    if args.skip_speed:
        return
    torch.manual_seed(0)
    if "f" in only:
        first_layer_transpose(args.repeats)
    if not only & set("abcg"):
        return

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
    if only & set("ab"):
        for dtype in (torch.float32, torch.float64):
            measure("cnn7 3x32x32 cap 8.8/255", cnn7, x, y, 8.8 / 255, args.repeats, dtype)
            measure("cnn_small MNIST cap 0.4", small, xm, ym, 0.4, args.repeats, dtype)
    if "c" in only:
        for dtype in (torch.float32, torch.float64):
            measure_linear("cnn7 3x32x32 eps 2/255", cnn7, x, y, 2 / 255, args.repeats, dtype)
            measure_linear("cnn_small MNIST eps 0.1", small, xm, ym, 0.1, args.repeats, dtype)
    if "g" in only:
        certify_counts("cnn_small MNIST cap 0.4", small, test.images, ym, 0.4)
        if args.cnn7_counts:
            certify_counts("cnn7 3x32x32 cap 8.8/255", cnn7, x, y, 8.8 / 255)


if __name__ == "__main__":
    main()
