"""IMDB side by side: neuralab's `imdb-best` and the peer recipes users would run instead, back to
back on this machine in one invocation, each system in its own process.

    NEURALAB_DATA=../shared/datasets python -m benchmarks.imdb_peers
    python -m benchmarks.imdb_peers --only nbsvm fasttext-imdb   # a subset
    python -m benchmarks.imdb_peers --limit 100   # smoke run: 100 reviews per class per split

Systems, in this order (the peers need `pip install -e '.[peers]'`):
- nbsvm: the strong classic baseline (Wang & Manning 2012) in scikit-learn: binary word
  uni+bigrams from CountVectorizer, naive-Bayes log-count-ratio scaling, logistic regression
  (liblinear). Its training is the NB scaling and the fit.
- fasttext-imdb: fastText with word bigrams, the "Bag of Tricks" recipe
  (benchmarks/peers/fasttext_imdb.py).
- keras-imdb-bilstm: Keras 3's "Bidirectional LSTM on IMDB" example on the torch backend
  (benchmarks/peers/keras_imdb_bilstm.py).
- imdb-best: neuralab, with a cold token cache and then a warm one (the same cache folder).

For each: test accuracy on the 25,000 test reviews; training seconds (the system's own training
clock, evaluation excluded); files → test accuracy seconds (inside the process, from reading
the raw review files to the test accuracy; interpreter start and imports excluded); peak
resident memory of the process (os.wait4); training throughput (training reviews × epochs ÷
training seconds; NBSVM: reviews ÷ fit seconds); and ratios against neuralab `imdb-best` with
the cold cache (time ÷ its time, test accuracy − its accuracy in points). One JSON line per
system is appended to benchmarks/results/imdb_peers.jsonl, stamped with the invocation, and the
`imdb-peers` table in BENCHMARKS.md is regenerated from this invocation's records (naming the
systems an --only run left out).
A --limit run gives every system a temporary tree of the first N reviews (by file name) per class
per split and records nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.processes import run_process
from benchmarks.report import replace_section

# Each system's peak memory is its own process's, so this module imports neither torch nor
# neuralab at the top: the NBSVM worker (this module, --worker nbsvm) must not carry them.

RESULTS = Path(__file__).parent / "results" / "imdb_peers.jsonl"
# The peer's best case: C = 0.3 was the best of 0.1 / 0.3 / 1 / 3 on the test set in a trial
# here (91.52%, 2026-11-25), with words and punctuation marks as tokens.
NBSVM_C = 0.3
TOKEN_PATTERN = r"[\w']+|[^\w\s]"
PEERS = {
    "fasttext-imdb": "benchmarks.peers.fasttext_imdb",
    "keras-imdb-bilstm": "benchmarks.peers.keras_imdb_bilstm",
}
SYSTEMS = ("nbsvm", *PEERS, "imdb-best")
NEEDS = {"nbsvm": "sklearn", "fasttext-imdb": "fasttext", "keras-imdb-bilstm": "keras"}
REFERENCE = "imdb-best-cold"  # the row every ratio divides by
RESULT_PREFIX = "PEER_RESULT "  # benchmarks/peers/common.py's protocol, used by workers too


# ------------------------------------------------------------------ workers (own processes)


def nbsvm() -> dict:
    """NB-weighted binary uni+bigrams + logistic regression; seconds from files to predictions."""
    import numpy as np
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    from benchmarks.peers.imdb_text import read_reviews

    start = time.perf_counter()
    (train, y_train), (test, y_test) = read_reviews("train"), read_reviews("test")
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True, token_pattern=TOKEN_PATTERN)
    x_train, x_test = vectorizer.fit_transform(train), vectorizer.transform(test)
    fit_start = time.perf_counter()
    p = 1 + np.asarray(x_train[y_train == 1].sum(0)).ravel()
    q = 1 + np.asarray(x_train[y_train == 0].sum(0)).ravel()
    ratio = sparse.diags(np.log((p / p.sum()) / (q / q.sum())))
    model = LogisticRegression(C=NBSVM_C, solver="liblinear", dual=True, max_iter=1000)
    model.fit(x_train @ ratio, y_train)
    fit_seconds = time.perf_counter() - fit_start
    accuracy = float((model.predict(x_test @ ratio) == y_test).mean())
    end = time.perf_counter()
    return {
        "system": "NBSVM (scikit-learn: CountVectorizer 1-2 grams, NB scaling, liblinear LR)",
        "accuracy": accuracy,
        "train_seconds": round(fit_seconds, 1),
        "total_seconds": round(end - start, 1),
        "epochs": None,  # liblinear's coordinate descent runs to convergence
        "examples_per_second": round(len(train) / fit_seconds, 1),
    }


def imdb_best() -> dict:
    """neuralab's `imdb-best`, timed from the review files to the test accuracy; the token
    cache is wherever the parent's NEURALAB_CACHE points."""
    import neuralab
    from benchmarks.peers.imdb_text import CLASSES, imdb_tree

    reviews = sum(len(list((imdb_tree() / "train" / name).glob("*.txt"))) for name in CLASSES)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run = neuralab.train("imdb-best", out=str(Path(folder) / "run"), verbose=False)
        total = time.perf_counter() - start
    seconds, epochs = run.metrics["train_seconds"], run.metrics["epochs"]
    return {
        "accuracy": run.metrics["accuracy"],
        "train_seconds": seconds,
        "total_seconds": round(total, 1),
        "epochs": epochs,
        "examples_per_second": round(reviews * epochs / seconds, 1),
    }


WORKERS = {"nbsvm": nbsvm, "imdb-best": imdb_best}


# ------------------------------------------------------------------------------ the harness


def run_system(name: str, env: dict[str, str]) -> dict:
    """One system in its own process: its result line, peak memory and process wall time."""
    module = PEERS.get(name)
    command = [sys.executable, "-m", module or "benchmarks.imdb_peers"]
    output, wall, memory = run_process(command if module else [*command, "--worker", name], env)
    line = next(line for line in output.splitlines() if line.startswith(RESULT_PREFIX))
    result = json.loads(line.removeprefix(RESULT_PREFIX))
    if module:
        result = from_curve(result)
    return {"name": name, **result, "peak_mib": memory, "process_seconds": round(wall, 1)}


def from_curve(result: dict) -> dict:
    """A peer's `Curve` report in this harness's fields: its recipe names the system."""
    curve = result["epochs"]
    return {
        "system": result["recipe"],
        "accuracy": result["accuracy"],
        "train_seconds": result["train_seconds"],
        "total_seconds": result["wall_seconds"],
        "epochs": curve[-1]["epoch"],
        "examples_per_second": result["examples_per_second"],
        "curve": curve,
    }


def run_all(chosen: list[str], env: dict[str, str], cache: Path) -> list[dict]:
    results = []
    for name in [name for name in SYSTEMS if name in chosen]:
        if name != "imdb-best":
            results.append(run_system(name, env))
            continue
        for temperature in ("cold", "warm"):  # the warm run reuses the cold run's token cache
            record = run_system(name, {**env, "NEURALAB_CACHE": str(cache)})
            label = f"neuralab `imdb-best` ({temperature} token cache)"
            results.append({**record, "name": f"imdb-best-{temperature}", "system": label})
    return results


def add_ratios(results: list[dict]) -> None:
    """Time ratios and accuracy difference against the reference row (None without one)."""
    reference = next((r for r in results if r["name"] == REFERENCE), None)
    for r in results:
        if reference is None:
            r |= {"train_ratio": None, "total_ratio": None, "accuracy_delta": None}
            continue
        r["train_ratio"] = round(r["train_seconds"] / reference["train_seconds"], 2)
        r["total_ratio"] = round(r["total_seconds"] / reference["total_seconds"], 2)
        r["accuracy_delta"] = round(100 * (r["accuracy"] - reference["accuracy"]), 2)  # points


def subset_tree(limit: int, folder: Path) -> Path:
    """A NEURALAB_DATA folder whose aclImdb tree links to the first `limit` reviews (by file
    name) per class per split of the real one."""
    from benchmarks.peers.imdb_text import CLASSES, imdb_tree

    for split in ("train", "test"):
        for name in CLASSES:
            target = folder / "imdb" / "aclImdb" / split / name
            target.mkdir(parents=True)
            for path in sorted((imdb_tree() / split / name).glob("*.txt"))[:limit]:
                (target / path.name).symlink_to(path)
    return folder


def check_installed(chosen: list[str]) -> None:
    missing = [NEEDS[n] for n in chosen if n in NEEDS and not importlib.util.find_spec(NEEDS[n])]
    if missing:
        raise SystemExit(
            f"{', '.join(missing)} not installed. Fix: pip install -e '.[peers]' (fasttext-wheel, "
            "keras; scikit-learn comes with '.[test]'), or leave those systems out with --only"
        )


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def table(records: list[dict], left_out: list[str] = ()) -> str:
    from benchmarks.machine import machine_line

    first = records[0]
    lines = [
        f"One run, {first['date']}, {machine_line(first['machine'])}. Ratios against neuralab "
        "`imdb-best` with a cold token cache: × = the system's time ÷ its time, Δ = the system's "
        "test accuracy − its accuracy, in points."
        + (f" Not in this run: {', '.join(left_out)}." if left_out else ""),
        "",
        "| system | test accuracy | Δ | training | × | files → test accuracy | × | "
        "training reviews/s | peak memory |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        delta = "—" if r["accuracy_delta"] is None else f"{r['accuracy_delta']:+.2f}"
        lines.append(
            f"| {r['system']} | {r['accuracy']:.2%} | {delta} | {r['train_seconds']:.1f} s | "
            f"{ratio(r['train_ratio'])} | {r['total_seconds']:.1f} s | {ratio(r['total_ratio'])} "
            f"| {r['examples_per_second']:,.0f} | {r['peak_mib']:,} MiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SYSTEMS, help="systems to run (default: all)")
    parser.add_argument("--limit", type=int, help="smoke run: reviews per class per split")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)  # a child's job
    args = parser.parse_args()
    if "NEURALAB_DATA" not in os.environ:
        raise SystemExit("set NEURALAB_DATA to the folder holding imdb/aclImdb")
    if args.worker:
        print(RESULT_PREFIX + json.dumps(WORKERS[args.worker]()), flush=True)
        return
    from benchmarks.machine import machine_info

    chosen = args.only or list(SYSTEMS)
    check_installed(chosen)
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ)
        if args.limit:
            env["NEURALAB_DATA"] = str(subset_tree(args.limit, Path(folder) / "data"))
        cache = Path(folder) / "cache"
        cache.mkdir()
        results = run_all(chosen, env, cache)
    add_ratios(results)
    stamp = {
        "date": time.strftime("%Y-%m-%d"),
        "invocation": time.strftime("%Y-%m-%dT%H:%M:%S"),  # groups one invocation's records
        "machine": machine_info(),
    }
    records = [{**r, **stamp} for r in results]
    print(table(records))
    if args.limit:
        print(f"(smoke run on {args.limit} reviews per class per split: nothing recorded)")
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    replace_section("imdb-peers", table(records, [s for s in SYSTEMS if s not in chosen]))


if __name__ == "__main__":
    main()
