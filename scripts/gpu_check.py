"""One prepared check for a CUDA machine: `make gpu-check [GPU_PYTHON=...] [DATA_DIR=...] [GPU_OUT=...]`.

For a GPU machine that may have no network and another PyTorch: it uses the Python that runs it
and installs nothing (a missing package is named in one line), reads the fetched data from
--data, and writes its summary (summary.md, summary.json, bench.json, runs/) to --out. In order:

1. the tests that need CUDA (tests/test_cuda.py: fused against equation path in fp32 and bf16,
   bit-exact resume);
2. the benchmark (`scripts/bench.py --quick`), whose nn.LSTM rows are cuDNN's, in fp32 and bf16;
3. three epochs of each paper model at the paper's defaults in fp32 and in bf16, against the
   published curves.

About 4 minutes on an H100/H200. `--device cpu --tiny` runs the same steps on the CPU at tiny
sizes, end to end in seconds (CI does).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("torch", "hydra", "omegaconf", "tqdm", "pytest", "matplotlib")  # module names, as imported
MODELS = ("single_lstm", "stacked_lstm", "cerebral_lstm")
PRECISIONS = ("fp32", "bf16")


def missing_modules(names):
    return [name for name in names if importlib.util.find_spec(name) is None]


def step(title, summary):
    print(f"\n== {title}", flush=True)
    summary["steps"].append({"title": title, "started": time.time()})


def run_tests(args, env):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                             "tests/test_cuda.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    print(result.stdout[-3000:], result.stderr[-2000:], sep="")
    last = (result.stdout.strip().splitlines() or ["no output"])[-1]
    return {"returncode": result.returncode, "result": last}


def run_bench(args, env):
    command = [sys.executable, "scripts/bench.py", "--quick", "--device", args.device, "--out", str(args.out / "bench.json")]
    if args.tiny:
        command += ["--size", "32", "--batch", "8"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    print(result.stdout[-4000:], result.stderr[-2000:], sep="")
    bench = json.loads((args.out / "bench.json").read_text()) if result.returncode == 0 else {}
    return {"returncode": result.returncode, "device": bench.get("device"), "ratios": bench.get("ratios", {}),
            "ms_per_step": {name: row["ms_per_step"] for name, row in bench.get("paper_shapes", {}).items()}}


def epoch_configs(args):
    """The configs of the last step: three epochs (tiny: two, at state 16) of each model in each
    precision, each in its own folder under --out."""
    from cerebral.config import compose

    sizes = ["model.state_size=16", "train.steps_per_epoch=3", "train.batch_size=8"] if args.tiny else []
    return [compose(f"model={model}", f"data.dir={args.data}", f"out_dir={args.out / 'runs' / precision / model / 'seed0'}",
                    f"device={args.device}", f"train.precision={precision}",
                    f"train.epochs={2 if args.tiny else 3}", *sizes)
            for precision in PRECISIONS for model in MODELS]


def run_epochs(configs, published):
    """Train each config, and its distance to the published curve."""
    from cerebral.claims import distance
    from cerebral.train import train

    rows = []
    for cfg in configs:
        model, start = cfg.model.name, time.perf_counter()
        losses = train(cfg)
        rows.append({"model": model, "precision": cfg.train.precision, "losses": losses,
                     "published": published[model][:len(losses)],
                     "max_abs_diff": distance(losses, published[model])["max_abs_diff"],
                     "seconds": time.perf_counter() - start})
    return rows


def write_summary(args, summary):
    lines = ["# GPU check", "", f"Device: {summary['device']}; torch {summary['torch']}; python {summary['python']}"
             + (" (tiny sizes)" if args.tiny else ""), "",
             f"Tests that need CUDA: {summary['tests']['result']} (exit {summary['tests']['returncode']})", "",
             "Benchmark (ms per training step, paper shapes):", "", "| entry | ms/step |", "|---|---|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in summary["bench"]["ms_per_step"].items()]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in summary["bench"]["ratios"].items()]
    lines += ["", "First epochs against the published curves:", "",
              "| model | precision | ours | published | max abs diff | seconds |", "|---|---|---|---|---|---|"]
    for r in summary["epochs"]:
        lines.append(f"| {r['model']} | {r['precision']} | {', '.join(f'{v:.4f}' for v in r['losses'])} | "
                     f"{', '.join(f'{v:.4f}' for v in r['published'])} | {r['max_abs_diff']:.4f} | {r['seconds']:.1f} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the fetched data folder (make data)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the summary and the runs")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the whole check in seconds")
    args = parser.parse_args()
    missing = missing_modules(NEEDED)
    if missing:
        sys.exit(f"error: this Python ({sys.executable}) lacks {', '.join(missing)}; gpu-check installs nothing: "
                 f"use a Python that has them (GPU_PYTHON=...), or pip install them there")
    sys.path.insert(0, str(ROOT))  # the package, importable without installing it
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: PyTorch sees no CUDA device here; run on a GPU machine, or add --device cpu --tiny")
    args.data, args.out = args.data.resolve(), args.out.resolve()
    from cerebral import data as chardata
    from cerebral import rundir
    from cerebral.curves import make_output_folder, published_curves
    from cerebral.errors import USER_ERRORS
    from cerebral.steps import device_name

    try:  # what the last step reads and writes, checked before the minutes of the first two
        chardata.load(args.data)
        published = published_curves(args.data)
        make_output_folder(args.out)
        configs = epoch_configs(args)
        for cfg in configs:  # a run folder of an earlier check at other sizes would refuse at the end
            rundir.resume_kernels(cfg)
            rundir.check_run_dir(cfg)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")

    env = {**os.environ, "CEREBRAL_TEST_DEVICE": args.device, "CEREBRAL_TEST_DATA": str(args.data),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    summary = {"device": device_name(torch.device(args.device)), "torch": torch.__version__,
               "python": sys.version.split()[0], "tiny": args.tiny, "steps": []}
    step("tests that need CUDA", summary)
    summary["tests"] = run_tests(args, env)
    step("benchmark", summary)
    summary["bench"] = run_bench(args, env)
    step("first epochs against the published curves", summary)
    try:
        summary["epochs"] = run_epochs(configs, published)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    write_summary(args, summary)
    print((args.out / "summary.md").read_text())
    failed = [name for name in ("tests", "bench") if summary[name]["returncode"] != 0]
    if failed:
        sys.exit(f"error: gpu-check: {' and '.join(failed)} failed; see {args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
