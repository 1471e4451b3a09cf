"""Evaluate a trained run on its test split: `python eval.py run=<job dir>`. See README.md."""

from mlplab.evaluate import main

if __name__ == "__main__":
    main()
