"""The README's main job: train a real network on real MNIST and predict a few test digits.

MNIST is read from $NEURALAB_DATA (or ~/.cache/neuralab) when present, else downloaded. With
neither files nor internet this script says so and trains on scikit-learn's 8x8 digits, a small
real dataset that ships inside scikit-learn. (`neuralab train` itself never switches datasets.)
"""

from __future__ import annotations

import sys

import neuralab
from neuralab.data import DataError, default_data_dir, load_dataset


def choose_recipe() -> str:
    try:
        load_dataset("mnist", download=True)
    except DataError as error:
        print("=" * 78)
        print("MNIST is not available here, so this quick start trains on scikit-learn's 8x8")
        print("digits instead (1,797 real handwritten digits that ship with scikit-learn).")
        reason = "\n     ".join(str(error).splitlines()[:3])  # the cause and each URL's failure
        print(f"Why: {reason}")
        print(f"To use MNIST offline, put the four MNIST .gz files in {default_data_dir()}/mnist/")
        print("or point NEURALAB_DATA at a folder that holds mnist/.")
        print("=" * 78, flush=True)
        return "digits-best"
    print(f"MNIST found in {default_data_dir() / 'mnist'}: training the mnist-best recipe.")
    return "mnist-best"


def main() -> int:
    recipe = choose_recipe()
    run = neuralab.train(recipe)
    predictor = neuralab.load(run.run_dir)
    dataset = load_dataset("digits" if recipe == "digits-best" else "mnist", download=False)
    images, labels = dataset.test.images[:8], dataset.test.labels[:8].tolist()
    guesses = predictor.predict(list(images), top_k=1)
    print(
        "first test images: "
        + ", ".join(
            f"{dataset.classes[label]}→{top[0][0]} ({top[0][1]:.0%})"
            for label, top in zip(labels, guesses, strict=True)
        )
    )
    print(f"\nNext: neuralab evaluate {run.run_dir}   ·   neuralab predict {run.run_dir} IMAGE.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
